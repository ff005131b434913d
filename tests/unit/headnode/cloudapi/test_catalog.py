"""Images (public and one's own), packages and networks through CloudAPI."""

from __future__ import annotations

from typing import Any

from tests.unit.headnode.api.conftest import make_image, make_package
from tests.unit.headnode.cloudapi.conftest import World


def test_images_show_public_and_own(call: Any, sdc: Any, world: World) -> None:
    names = {i["name"] for i in call(world.alice, "get", "/my/images").get_json()}
    assert names == {"base-64", "alice-private"}
    one = call(world.alice, "get", f"/my/images/{world.public_image_uuid}").get_json()
    assert {"id", "name", "version", "os", "type", "public", "state", "owner",
            "published_at", "files", "requirements"} <= set(one)
    assert one["public"] is True


def test_image_filters(call: Any, sdc: Any, world: World) -> None:
    make_image(sdc, name="ubuntu", version="24.04", os="linux", type="lx-dataset")
    make_image(sdc, name="old", state="disabled")

    def names(query: str) -> set[str]:
        answer = call(world.alice, "get", f"/my/images{query}")
        assert answer.status_code == 200, answer.get_json()
        return {i["name"] for i in answer.get_json()}

    assert names("?os=linux") == {"ubuntu"}
    assert names("?name=ubuntu&version=24.04") == {"ubuntu"}
    assert names("?type=lx-dataset") == {"ubuntu"}
    assert names("?public=false") == {"alice-private"}
    assert names(f"?owner={world.alice.uuid}") == {"alice-private"}
    assert names("?state=disabled") == {"old"}
    assert "old" in names("?state=all")
    assert "old" not in names("")


def test_packages_list_and_get_by_id_or_name(call: Any, sdc: Any, world: World) -> None:
    make_package(sdc, name="retired", active=False)
    listed = call(world.alice, "get", "/my/packages").get_json()
    assert [p["name"] for p in listed] == ["small"]
    assert {"id", "name", "memory", "disk", "swap", "vcpus", "lwps", "version",
            "group", "description", "default"} <= set(listed[0])
    by_name = call(world.alice, "get", "/my/packages/small").get_json()
    by_id = call(world.alice, "get", f"/my/packages/{world.package.uuid}").get_json()
    assert by_name == by_id
    missing = call(world.alice, "get", "/my/packages/nope")
    assert (missing.status_code, missing.get_json()["code"]) == (404, "ResourceNotFound")


def test_networks_public_and_own(call: Any, world: World) -> None:
    listed = call(world.alice, "get", "/my/networks").get_json()
    assert {n["name"] for n in listed} == {"external", "alice-net"}
    own = call(world.alice, "get", f"/my/networks/{world.alice.network_uuid}").get_json()
    assert own["public"] is False
    assert own["subnet"] == "192.168.1.0/24"
