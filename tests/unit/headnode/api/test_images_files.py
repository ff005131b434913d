"""Image files through the API: an operator's import, and nodes' signed transfers."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask.testing import FlaskClient

from headnode.imagestore import ImageStore
from headnode.store.models import Image
from tests.unit.headnode.api.conftest import count, make_image

#: larger than the API's 1 MiB JSON body limit, which files must not be held to
DATA = os.urandom(3 * 1024 * 1024 + 17)
SERVER = "5a4e1f7c-9d0b-4b8e-8c3a-2b1d0e9f8a76"
RAW = {"Content-Type": "application/octet-stream"}


def manifest(data: bytes = DATA, **extra: Any) -> dict[str, Any]:
    return {"name": "busybox", "version": "1.35.0", "os": "linux",
            "files": [{"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                       "compression": "gzip"}], **extra}


def stored_files(settings: Any) -> list[str]:
    root = Path(settings.data_dir) / "images"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_import_then_file_activates_the_image(api: Any, settings: Any) -> None:
    created = api("post", "/ops/images", json=manifest())
    assert created.status_code == 201, created.get_json()
    image = created.get_json()
    assert image["state"] == "unactivated"
    assert image["files"] == manifest()["files"]

    put = api("put", f"/ops/images/{image['uuid']}/file", data=DATA, headers=RAW)
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["state"] == "active"
    assert stored_files(settings) == [image["uuid"]]

    got = api("get", f"/ops/images/{image['uuid']}/file")
    assert got.status_code == 200 and got.data == DATA
    again = api("put", f"/ops/images/{image['uuid']}/file", data=DATA, headers=RAW)
    assert again.status_code == 409 and again.get_json()["code"] == "InvalidState"


def test_a_wrong_checksum_is_refused_and_nothing_kept(api: Any, settings: Any,
                                                      sdc: Any) -> None:
    image = api("post", "/ops/images", json=manifest()).get_json()
    corrupt = bytearray(DATA)
    corrupt[1000] ^= 0xFF
    put = api("put", f"/ops/images/{image['uuid']}/file", data=bytes(corrupt), headers=RAW)
    assert put.status_code == 422
    body = put.get_json()
    assert body["code"] == "InvalidArgument" and set(body["errors"]) == {"sha256"}
    assert stored_files(settings) == []
    assert api("get", f"/ops/images/{image['uuid']}").get_json()["state"] == "unactivated"
    assert api("get", f"/ops/images/{image['uuid']}/file").status_code == 404
    short = api("put", f"/ops/images/{image['uuid']}/file", data=DATA[:-1], headers=RAW)
    assert short.status_code == 422 and set(short.get_json()["errors"]) == {"size"}
    assert stored_files(settings) == []


def test_bad_file_fields_are_named(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/images", json={
        "name": "x", "files": [{"sha256": "abc", "size": -1, "compression": "zip"}]})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {
        "files.0.sha256", "files.0.size", "files.0.compression"}
    assert count(sdc, Image) == 0


def test_an_image_without_a_file_takes_none(api: Any, sdc: Any) -> None:
    image = make_image(sdc)
    put = api("put", f"/ops/images/{image.uuid}/file", data=DATA, headers=RAW)
    assert put.status_code == 409
    assert api("get", f"/ops/images/{image.uuid}/file").status_code == 404
    missing = api("put", f"/ops/images/{uuid.uuid4()}/file", data=DATA, headers=RAW)
    assert missing.status_code == 404


def test_the_operator_file_endpoints_need_the_token(client: FlaskClient, api: Any) -> None:
    image = api("post", "/ops/images", json=manifest()).get_json()
    assert client.put(f"/ops/images/{image['uuid']}/file", data=DATA,
                      headers=RAW).status_code == 401
    assert client.get(f"/ops/images/{image['uuid']}/file").status_code == 401


def test_a_node_fetches_with_its_signed_url(client: FlaskClient, api: Any,
                                            settings: Any) -> None:
    image = api("post", "/ops/images", json=manifest()).get_json()
    api("put", f"/ops/images/{image['uuid']}/file", data=DATA, headers=RAW)
    store = ImageStore(settings)
    url = store.source_for(SERVER, make_ref(image["uuid"]))["url"]
    got = client.get(path_and_query(url))  # no operator token
    assert got.status_code == 200 and got.data == DATA

    bare = client.get(f"/images/{image['uuid']}/file")
    assert bare.status_code == 403 and bare.get_json()["code"] == "Forbidden"
    other = store.source_for(SERVER, make_ref(str(uuid.uuid4())))["url"]
    forged = path_and_query(other).replace(urlsplit(other).path,
                                           f"/images/{image['uuid']}/file")
    assert client.get(forged).status_code == 403
    put_url = store.upload_for(SERVER, make_ref(image["uuid"]))["url"]
    assert client.get(path_and_query(put_url)).status_code == 403


def make_ref(image_uuid: str) -> Any:
    return type("Ref", (), {"uuid": image_uuid})()


def test_a_node_uploads_an_image_being_made(client: FlaskClient, sdc: Any,
                                            settings: Any) -> None:
    image = make_image(sdc, name="made", state="creating", files=[])
    store = ImageStore(settings)
    upload = store.upload_for(SERVER, image)
    put = client.put(path_and_query(upload["url"]), data=DATA, headers=upload["headers"])
    assert put.status_code == 200, put.get_json()
    measured = {"sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA)}
    assert put.get_json() == measured
    with sdc.read() as session:
        row = session.get(Image, image.uuid)
        assert row.files == [measured] and row.state == "creating"
    assert store.path(image.uuid).read_bytes() == DATA

    second = client.put(path_and_query(upload["url"]), data=b"another run", headers=RAW)
    assert second.status_code == 409
    assert store.path(image.uuid).read_bytes() == DATA

    source = store.source_for(SERVER, image)["url"]
    assert client.put(path_and_query(source), data=DATA, headers=RAW).status_code == 403
    done = make_image(sdc, name="done", state="active")
    refused = client.put(path_and_query(store.upload_for(SERVER, done)["url"]), data=DATA,
                         headers=RAW)
    assert refused.status_code == 409
    assert not store.has_file(done.uuid)
