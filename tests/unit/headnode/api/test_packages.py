from __future__ import annotations

from typing import Any

from headnode.store.models import Machine, Package
from tests.unit.headnode.api.conftest import (
    add,
    count,
    make_account,
    make_image,
    make_package,
)


def test_create_get_list_delete(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/packages", json={
        "name": "g4-highcpu-1G", "memory": 1024, "disk": 25600, "vcpus": 2,
        "traits": {"ssd": True}, "group": "highcpu"})
    assert answer.status_code == 201
    created = answer.get_json()
    assert created["uuid"]
    # model defaults fill what was not given
    assert (created["swap"], created["cpu_cap"], created["active"], created["version"]) == (
        0, 0, True, "1.0.0")

    by_uuid = api("get", f"/ops/packages/{created['uuid']}").get_json()
    by_name = api("get", "/ops/packages/g4-highcpu-1G").get_json()
    assert by_uuid == by_name == created
    assert [p["name"] for p in api("get", "/ops/packages").get_json()] == ["g4-highcpu-1G"]

    answer = api("delete", "/ops/packages/g4-highcpu-1G")
    assert answer.status_code == 204
    assert api("get", f"/ops/packages/{created['uuid']}").status_code == 404
    assert count(sdc, Package) == 0


def test_duplicate_name_is_a_conflict(api: Any, sdc: Any) -> None:
    make_package(sdc, name="small")
    answer = api("post", "/ops/packages", json={"name": "small", "memory": 1, "disk": 1})
    assert answer.status_code == 409
    assert answer.get_json()["code"] == "DuplicateName"
    assert count(sdc, Package) == 1


def test_missing_and_ill_typed_fields_are_named(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/packages", json={"name": "x", "memory": "lots", "vcpus": 0})
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["code"] == "ValidationFailed"
    assert set(body["errors"]) == {"memory", "disk", "vcpus"}
    assert body["message"] == "invalid fields: disk, memory, vcpus"
    assert count(sdc, Package) == 0


def test_read_only_and_unknown_fields_are_refused(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/packages", json={
        "name": "x", "memory": 1, "disk": 1, "uuid": "abc", "memroy": 2})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"uuid", "memroy"}
    assert count(sdc, Package) == 0


def test_zero_memory_is_refused(api: Any) -> None:
    answer = api("post", "/ops/packages", json={"name": "x", "memory": 0, "disk": 1})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"memory"}


def test_unknown_package_is_404(api: Any) -> None:
    assert api("get", "/ops/packages/nope").status_code == 404
    assert api("delete", "/ops/packages/nope").status_code == 404


def test_package_in_use_cannot_be_deleted(api: Any, sdc: Any) -> None:
    package = make_package(sdc)
    image = make_image(sdc)
    owner = make_account(sdc)
    add(sdc, Machine(alias="web", owner_uuid=owner.uuid, package_uuid=package.uuid,
                     image_uuid=image.uuid, ram_mb=1024, disk_mb=10240, state="destroyed"))
    answer = api("delete", f"/ops/packages/{package.uuid}")
    assert answer.status_code == 409
    assert answer.get_json()["code"] == "PackageInUse"
    assert count(sdc, Package) == 1
