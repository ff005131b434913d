"""API versions: the semver ranges clients send in Accept-Version (as restify reads them),
the versions served (7.0.0 to 9.0.0), and what 7.x shows differently (CloudAPI's docs)."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.api.cloudapi.versions import InvalidRange, newest_satisfying
from schemas.cloudapi import API_VERSIONS
from tests.unit.headnode.api.conftest import make_image
from tests.unit.headnode.cloudapi.conftest import World

SERVED = ("7.0.0", "7.1.0", "7.2.0", "7.3.0", "8.0.0", "9.0.0")


@pytest.mark.parametrize(("offered", "chosen"), [
    ("~7.2", "7.2.0"), ("7.x", "7.3.0"), ("*", "9.0.0"), (">=7", "9.0.0"),
    ("7.0.0", "7.0.0"), ("=7.1.0", "7.1.0"), ("v8.0.0", "8.0.0"), ("~8||~7", "8.0.0"),
    ("~7 || ~8", "8.0.0"), ("^7.2", "7.3.0"), ("~7", "7.3.0"), ("7", "7.3.0"),
    ("8.0", "8.0.0"), ("9.x", "9.0.0"), ("x", "9.0.0"), (">= 7 <8", "7.3.0"),
    ("7.1 - 8", "8.0.0"), ("7.0.0 - 7.2.0", "7.2.0"), (">7.1", "9.0.0"), ("<=8", "8.0.0"),
    ("~>7.1", "7.1.0"), ("^8", "8.0.0"), ("", "9.0.0"),
    ("~6", None), ("6.5", None), ("<7", None), ("~10", None), (">9", None), (">*", None),
    ("~7.4", None), ("7.2.1", None),
])
def test_ranges_pick_the_newest_version_within(offered: str, chosen: str | None) -> None:
    assert newest_satisfying(SERVED, offered) == chosen


@pytest.mark.parametrize("offered", ["abc", "~", ">>7", "7.2.3.4", "1.2.3 || foo",
                                     "7.0.0 -", "~7.2; drop"])
def test_what_is_not_a_range_is_said_so(offered: str) -> None:
    with pytest.raises(InvalidRange):
        newest_satisfying(SERVED, offered)


def test_ping_lists_7_to_9(client: Any) -> None:
    assert tuple(client.get("/--ping").get_json()["cloudapi"]["versions"]) == SERVED
    assert API_VERSIONS == SERVED


@pytest.mark.parametrize(("offered", "chosen"), [
    ("~7.2", "7.2.0"), ("7.x", "7.3.0"), ("*", "9.0.0"), (">=7", "9.0.0"), ("7.0.0", "7.0.0"),
])
def test_a_7x_client_is_served(client: Any, offered: str, chosen: str) -> None:
    answer = client.get("/--ping", headers={"Accept-Version": offered})
    assert answer.status_code == 200
    assert answer.headers["Api-Version"] == chosen
    # the old header name, as CloudAPI still reads it
    assert client.get("/--ping", headers={"Api-Version": offered}) \
        .headers["Api-Version"] == chosen


@pytest.mark.parametrize("offered", ["~6", "6.5.0", "<7", "~10", ">9"])
def test_a_range_outside_7_to_9_is_refused_naming_the_versions(client: Any,
                                                               offered: str) -> None:
    answer = client.get("/--ping", headers={"Accept-Version": offered})
    assert answer.status_code == 400
    body = answer.get_json()
    assert body["code"] == "InvalidVersion"
    assert offered in body["message"]
    assert "matches none of the supported versions 7.0.0, 7.1.0, 7.2.0, 7.3.0, 8.0.0, " \
        "9.0.0" in body["message"]


def test_a_header_that_is_not_a_range_is_refused(client: Any, world: World) -> None:
    answer = client.get("/--ping", headers={"Accept-Version": "latest please"})
    assert answer.status_code == 400
    assert answer.get_json()["code"] == "InvalidVersion"
    assert "is not a semver range" in answer.get_json()["message"]


def test_machines_as_7x_shows_them(call: Any, machine_of: Any, world: World) -> None:
    made = machine_of(world.alice, "web")

    def machine(version: str) -> dict[str, Any]:
        answer = call(world.alice, "get", f"/my/machines/{made['id']}",
                      headers={"Accept-Version": version})
        assert answer.status_code == 200, answer.get_json()
        assert answer.headers["Api-Version"] == version
        return dict(answer.get_json())

    newest, v8 = machine("9.0.0"), machine("8.0.0")
    assert newest["brand"] == v8["brand"] == "joyent"
    assert newest["docker"] is False and "networks" in newest
    v72 = machine("7.2.0")
    assert "brand" not in v72 and "docker" not in v72  # added in 8.0.0
    assert v72["networks"] == newest["networks"]
    assert v72["type"] == "smartmachine"
    v70 = machine("7.0.0")
    assert "networks" not in v70  # added in 7.1.0
    assert v70["id"] == made["id"] and v70["ips"] == newest["ips"]
    listed = call(world.alice, "get", "/my/machines", headers={"Accept-Version": "~7.2"})
    assert listed.headers["Api-Version"] == "7.2.0"
    assert [set(m) for m in listed.get_json()] == [set(v72)]


def test_images_as_7x_show_them(call: Any, sdc: Any, world: World) -> None:
    zvol = make_image(sdc, name="ubuntu-kvm", version="1", os="linux", type="zvol")

    def image(version: str, uuid: str) -> dict[str, Any]:
        answer = call(world.alice, "get", f"/my/images/{uuid}",
                      headers={"Accept-Version": version})
        assert answer.status_code == 200, answer.get_json()
        return dict(answer.get_json())

    assert image("~8", zvol.uuid)["type"] == "zvol"
    assert image("~7", zvol.uuid)["type"] == "virtualmachine"
    assert image("~7", world.public_image_uuid)["type"] == "smartmachine"
    assert image("~9", world.public_image_uuid)["type"] == "zone-dataset"
    v71 = image("7.1.0", world.public_image_uuid)
    assert {"files", "owner", "public", "state", "tags"} <= set(v71)
    v70 = image("7.0.0", world.public_image_uuid)
    assert not {"files", "owner", "public", "state", "tags"} & set(v70)
    assert v70["id"] == world.public_image_uuid
