from __future__ import annotations

import uuid
from typing import Any

from headnode.store.models import Image
from tests.unit.headnode.api.conftest import count, make_image


def test_create_get_list(api: Any) -> None:
    answer = api("post", "/ops/images", json={
        "name": "base-64-lts", "version": "24.4.1", "os": "smartos", "type": "zone-dataset",
        "size_mb": 312, "requirements": {"min_ram": 256},
        "files": [{"sha256": "ab" * 32, "size": 327155712, "compression": "gzip"}]})
    assert answer.status_code == 201
    created = answer.get_json()
    # its file is still to come (PUT /ops/images/<uuid>/file)
    assert created["state"] == "unactivated" and created["public"] is True
    assert api("get", f"/ops/images/{created['uuid']}").get_json() == created
    assert [i["uuid"] for i in api("get", "/ops/images").get_json()] == [created["uuid"]]


def test_imported_manifest_keeps_its_uuid(api: Any, sdc: Any) -> None:
    image_uuid = str(uuid.uuid4())
    answer = api("post", "/ops/images", json={"uuid": image_uuid, "name": "alpine"})
    assert answer.status_code == 201
    assert answer.get_json()["uuid"] == image_uuid
    again = api("post", "/ops/images", json={"uuid": image_uuid, "name": "alpine2"})
    assert again.status_code == 409
    assert count(sdc, Image) == 1


def test_same_name_and_version_is_a_conflict(api: Any, sdc: Any) -> None:
    make_image(sdc, name="base-64", version="1")
    answer = api("post", "/ops/images", json={"name": "base-64", "version": "1"})
    assert answer.status_code == 409
    assert answer.get_json()["code"] == "DuplicateName"
    assert api("post", "/ops/images", json={"name": "base-64", "version": "2"}).status_code == 201


def test_bad_manifest_fields_are_named(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/images", json={
        "type": "floppy", "uuid": "not-a-uuid", "size_mb": -1, "files": "x"})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"name", "type", "uuid", "size_mb", "files"}
    assert count(sdc, Image) == 0


def test_unknown_image_is_404(api: Any) -> None:
    answer = api("get", f"/ops/images/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.get_json()["code"] == "ResourceNotFound"
