"""Image names and versions as imgadm takes them (node-imgmanifest's rules, 04eb579): a
manifest a SmartOS node would refuse at install is refused at import and at create-from-
machine, with a 4xx naming the field, and nothing is recorded."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import images
from headnode.services.errors import InvalidArgument
from headnode.store.models import Image, Job, Machine
from tests.unit.headnode.api.conftest import (
    add,
    count,
    make_account,
    make_image,
    make_package,
    make_server,
)

#: names of images this project makes and imports: they must stay valid
GOOD_NAMES = ("debian-12", "busybox", "base-64", "base-64-lts", "ubuntu/22.04 lts", "a_b.c")
BAD_NAMES = ("bad name!", "naïve", "a:b", "tab\there", "x" * 129, "")


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_names_imgadm_takes_are_imported(api: Any, name: str) -> None:
    answer = api("post", "/ops/images", json={"name": name, "version": "20240101.1"})
    assert answer.status_code == 201, answer.get_json()


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_imgadm_refuses_are_refused_at_import(api: Any, sdc: Any, name: str) -> None:
    answer = api("post", "/ops/images", json={"name": name, "version": "1"})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"name"}
    assert count(sdc, Image) == 0


def test_a_version_with_a_space_is_refused(api: Any, sdc: Any) -> None:
    answer = api("post", "/ops/images", json={"name": "busybox", "version": "1 beta"})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"version"}
    assert count(sdc, Image) == 0


def test_create_from_machine_refuses_a_name_imgadm_would(api: Any, sdc: Any) -> None:
    owner = make_account(sdc)
    machine = add(sdc, Machine(alias="web", owner_uuid=owner.uuid,
                               package_uuid=make_package(sdc).uuid,
                               image_uuid=make_image(sdc).uuid,
                               server_uuid=make_server(sdc).uuid, state="running",
                               ram_mb=1024, disk_mb=10240))
    answer = api("post", "/ops/images/from-machine",
                 json={"machine": machine.uuid, "name": "golden image!", "version": "1"})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"name"}
    assert count(sdc, Job) == 0 and count(sdc, Image) == 1


def test_the_service_refuses_too(sdc: Any) -> None:
    # every path that records a manifest (API, image builds, CloudAPI) goes through it
    with pytest.raises(InvalidArgument) as exc:
        images.create_image(sdc, {"name": "bad|name", "version": "1"})
    assert exc.value.field == "name"
    assert count(sdc, Image) == 0
