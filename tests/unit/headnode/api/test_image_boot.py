"""An image's tags and init through the operator API: kept from the manifest (as `sdc image
import` posts it), checked field by field, copied to an image made from a machine."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from headnode.services import images
from headnode.store.models import Image
from tests.unit.headnode.api.conftest import (
    count,
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
)

INIT = {"kind": "os", "args": ["/usr/sbin/sdc-init"], "stop_signal": "SIGTERM",
        "stop_timeout": 30}
DATA = b"a rootfs, as far as this test is concerned"


def debian_manifest(**extra: Any) -> dict[str, Any]:
    """What `sdc image build-debian` writes and `sdc image import` posts."""
    return {"name": "debian-12", "version": "20260101", "os": "linux", "type": "lx-dataset",
            "tags": {"default_user": "debian"}, "init": INIT,
            "files": [{"sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA),
                       "compression": "gzip"}], **extra}


def test_an_imported_manifest_keeps_its_tags_and_init(api: Any) -> None:
    created = api("post", "/ops/images", json=debian_manifest())
    assert created.status_code == 201, created.get_json()
    image = created.get_json()
    assert image["tags"] == {"default_user": "debian"}
    # the init as a node takes it: what the manifest left out has its default
    assert image["init"] == {**INIT, "env": [], "workdir": "/"}
    put = api("put", f"/ops/images/{image['uuid']}/file", data=DATA,
              headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 200, put.get_json()
    shown = api("get", f"/ops/images/{image['uuid']}").get_json()
    assert (shown["state"], shown["tags"], shown["init"]) == ("active", image["tags"],
                                                              image["init"])


def test_a_manifest_without_them_has_no_tags_and_no_init(api: Any) -> None:
    image = api("post", "/ops/images", json={"name": "plain"}).get_json()
    assert (image["tags"], image["init"]) == ({}, None)


@pytest.mark.parametrize(("init", "field"), [
    ({"kind": "os"}, "init.args"),
    ({"args": []}, "init.args"),
    ({"args": ["/sbin/init"], "kind": "vm"}, "init.kind"),
    ({"args": ["/sbin/init"], "stop_signal": "SIGKILL"}, "init.stop_signal"),
    ({"args": ["/sbin/init"], "stop_timeout": 0}, "init.stop_timeout"),
    ({"args": ["/sbin/init"], "env": ["no equals sign"]}, "init.env.0"),
    ({"args": ["/sbin/init"], "workdir": "relative"}, "init.workdir"),
    ({"args": ["/sbin/init"], "colour": "red"}, "init.colour"),
    ("/sbin/init", "init"),
])
def test_a_bad_init_is_refused_naming_the_field(api: Any, sdc: Any, init: Any,
                                                field: str) -> None:
    answer = api("post", "/ops/images", json=debian_manifest(init=init))
    assert answer.status_code == 422, answer.get_json()
    assert set(answer.get_json()["errors"]) == {field}
    assert field in answer.get_json()["message"]
    assert count(sdc, Image) == 0


def test_bad_tags_are_refused(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/images", json=debian_manifest(tags=["default_user"]))
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"tags"}
    assert count(sdc, Image) == 0


def test_an_image_made_from_a_machine_boots_as_its_origin(sdc: Any) -> None:
    origin = make_image(sdc, name="debian", os="linux", type="lx-dataset",
                        tags={"default_user": "debian"}, init=INIT)
    fleet = {"server": make_server(sdc), "package": make_package(sdc),
             "image": origin, "owner": make_account(sdc)}
    machine = make_machine(sdc, fleet)
    made = images.create_image_from_machine(sdc, machine.uuid, "golden", "1",
                                            {"type": "operator"})["image"]
    assert (made["tags"], made["init"], made["type"]) == (
        {"default_user": "debian"}, INIT, "lx-dataset")
