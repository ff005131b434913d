"""What a CloudAPI create gives a machine to boot with: the account's keys as
``root_authorized_keys`` (or CloudAPI's KeyRequired), the tenant's user-script and
user-data, the brand of its image's type; and images show their tags."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.store.models import Job, Machine, Nic, Reservation
from tests.unit.headnode.api.conftest import count, make_account, make_image
from tests.unit.headnode.cloudapi.conftest import World


def row(sdc: Any, machine_uuid: str) -> Machine:
    with sdc.read() as session:
        machine = session.get(Machine, machine_uuid)
        assert machine is not None
        return machine


def written(sdc: Any) -> tuple[int, int, int, int]:
    return (count(sdc, Machine), count(sdc, Job), count(sdc, Reservation), count(sdc, Nic))


def test_the_accounts_keys_are_the_machines_root_authorized_keys(call: Any, sdc: Any,
                                                                 world: World) -> None:
    from tests.support.httpsig_client import Signer

    second = Signer("alice", kind="ed25519")
    assert call(world.alice, "post", "/my/keys",
                json={"name": "laptop", "key": second.public_line}).status_code == 201
    answer = call(world.alice, "post", "/my/machines", json={
        "name": "box", "package": "small", "image": "base-64",
        "metadata.user-script": "#!/bin/sh\necho hi > /tmp/hi\n",
        "metadata.user-data": "some data"})
    assert answer.status_code == 201, answer.get_json()
    expected = {
        # each key's OpenSSH line and a newline, oldest key first
        "root_authorized_keys": f"{world.alice.signer.public_line}\n{second.public_line}\n",
        "user-script": "#!/bin/sh\necho hi > /tmp/hi\n", "user-data": "some data"}
    assert answer.get_json()["metadata"] == expected
    assert row(sdc, answer.get_json()["id"]).customer_metadata == expected


def test_a_tenants_own_root_authorized_keys_wins(call: Any, sdc: Any, world: World) -> None:
    mine = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x\n"
    answer = call(world.alice, "post", "/my/machines", json={
        "package": "small", "image": "base-64", "metadata.root_authorized_keys": mine})
    assert answer.status_code == 201, answer.get_json()
    assert row(sdc, answer.get_json()["id"]).customer_metadata == {"root_authorized_keys": mine}


def test_an_account_without_keys_gets_key_required_and_nothing_is_made(
        call: Any, sdc: Any, world: World, jobqueue: Any) -> None:
    make_account(sdc, login="carol", email="carol@example.com")  # no key
    before = written(sdc)
    # an operator acting as carol: carol herself could not sign a request
    answer = call(world.operator, "post", "/carol/machines",
                  json={"package": "small", "image": "base-64"})
    assert answer.status_code == 409, answer.get_json()
    assert answer.get_json() == {"code": "KeyRequired",
                                 "message": "At least one SSH key is required to provision"}
    assert written(sdc) == before
    assert jobqueue.enqueued == []


def test_an_image_with_a_password_needs_no_key(call: Any, sdc: Any, world: World) -> None:
    account = make_account(sdc, login="carol", email="carol@example.com")
    make_image(sdc, name="windows", requirements={"password": True})
    answer = call(world.operator, "post", "/carol/machines",
                  json={"package": "small", "image": "windows"})
    assert answer.status_code == 201, answer.get_json()
    made = row(sdc, answer.get_json()["id"])
    assert made.owner_uuid == account.uuid and made.customer_metadata == {}


@pytest.mark.parametrize(("image_type", "requirements", "brand", "machine_type"), [
    ("lx-dataset", {}, "lx", "smartmachine"),
    ("zone-dataset", {}, "joyent", "smartmachine"),
    ("zvol", {}, "kvm", "virtualmachine"),
    ("docker", {}, "lx", "smartmachine"),
    ("other", {}, "joyent", "smartmachine"),
    # IMGAPI's requirements.brand, when it names a brand, says it
    ("zvol", {"brand": "bhyve"}, "bhyve", "virtualmachine"),
    ("zone-dataset", {"brand": "lx"}, "lx", "smartmachine"),
    ("lx-dataset", {"brand": "no-such-brand"}, "lx", "smartmachine"),
])
def test_the_brand_follows_the_images_type(call: Any, sdc: Any, world: World,
                                           image_type: str, requirements: dict[str, Any],
                                           brand: str, machine_type: str) -> None:
    image = make_image(sdc, name=f"img-{image_type}-{len(requirements)}", os="linux",
                       type=image_type, requirements=requirements)
    answer = call(world.alice, "post", "/my/machines",
                  json={"package": "small", "image": image.uuid})
    assert answer.status_code == 201, answer.get_json()
    shown = call(world.alice, "get", f"/my/machines/{answer.get_json()['id']}").get_json()
    assert (shown["brand"], shown["type"]) == (brand, machine_type)
    assert row(sdc, shown["id"]).brand == brand


def test_images_show_their_tags_not_their_init(call: Any, sdc: Any, world: World) -> None:
    image = make_image(sdc, name="debian", os="linux", type="lx-dataset",
                       tags={"default_user": "debian"}, traits={"ssd": True},
                       init={"kind": "os", "args": ["/usr/sbin/sdc-init"]})
    shown = call(world.alice, "get", f"/my/images/{image.uuid}").get_json()
    assert shown["tags"] == {"default_user": "debian"}
    assert "init" not in shown
    # API 7.0 had no tags yet
    old = call(world.alice, "get", f"/my/images/{image.uuid}",
               headers={"Accept-Version": "~7.0"}).get_json()
    assert "tags" not in old
