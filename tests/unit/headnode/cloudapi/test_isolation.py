"""Tenant isolation: bob calls every machine, key, snapshot, image and network endpoint on
alice's objects. Each answer is what an object that does not exist gets (404
ResourceNotFound, or a refused create), and nothing of alice's changes."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import jobs, keys, machines, networks, snapshots
from headnode.store.models import MachineSnapshot
from tests.unit.headnode.api.conftest import make_package
from tests.unit.headnode.cloudapi.conftest import World, finish


@pytest.fixture
def alices(machine_of: Any, call: Any, sdc: Any, world: World) -> dict[str, str]:
    make_package(sdc, name="medium", memory=2048, disk=20480)
    made = machine_of(world.alice, "secret", **{"tag.role": "db", "metadata.pw": "hunter2"})
    call(world.alice, "post", f"/my/machines/{made['id']}/snapshots", json={"name": "s1"})
    finish(sdc, made["id"])
    with sdc.transaction() as session:
        session.get(MachineSnapshot, (made["id"], "s1")).state = "created"
    return {"machine": made["id"], "snapshot": "s1",
            "key": world.alice.signer.fingerprint}


def alice_state(sdc: Any, world: World, ids: dict[str, str]) -> dict[str, Any]:
    return {
        "machine": machines.get_machine(sdc, ids["machine"]),
        "snapshots": snapshots.list_snapshots(sdc, ids["machine"]),
        "keys": [keys.key_to_dict(k) for k in keys.list_keys(sdc, world.alice.uuid)],
        "jobs": jobs.list_jobs(sdc, machine_uuid=ids["machine"]),
        "networks": [networks.network_to_dict(n)
                     for n in networks.list_networks(sdc, world.alice.uuid)],
    }


def requests_on(ids: dict[str, str], world: World) -> list[tuple[str, str, Any]]:
    m, s, k = ids["machine"], ids["snapshot"], ids["key"]
    base = f"/my/machines/{m}"
    calls: list[tuple[str, str, Any]] = [
        ("get", base, None),
        ("delete", base, None),
        ("get", f"{base}/audit", None),
        ("get", f"/my/keys/{k}", None),
        ("delete", f"/my/keys/{k}", None),
        ("get", f"/my/images/{world.alice.image_uuid}", None),
        ("get", f"/my/networks/{world.alice.network_uuid}", None),
        ("get", f"/my/networks/{world.alice.network_uuid}", None),
        ("get", f"{base}/snapshots", None),
        ("post", f"{base}/snapshots", {"name": "bobs"}),
        ("get", f"{base}/snapshots/{s}", None),
        ("post", f"{base}/snapshots/{s}", None),
        ("delete", f"{base}/snapshots/{s}", None),
    ]
    for action in ({"action": "stop"}, {"action": "start"}, {"action": "reboot"},
                   {"action": "resize", "package": "medium"},
                   {"action": "rename", "name": "bobs"}):
        calls.append(("post", base, action))
    for kind in ("tags", "metadata"):
        calls += [
            ("get", f"{base}/{kind}", None),
            ("post", f"{base}/{kind}", {"x": "y"}),
            ("put", f"{base}/{kind}", {"x": "y"}),
            ("delete", f"{base}/{kind}", None),
            ("get", f"{base}/{kind}/role", None),
            ("delete", f"{base}/{kind}/role", None),
            ("get", f"{base}/{kind}/pw", None),
            ("delete", f"{base}/{kind}/pw", None),
        ]
    return calls


def test_bob_gets_404_on_every_alice_object_and_nothing_changes(
        call: Any, sdc: Any, world: World, alices: dict[str, str], jobqueue: Any) -> None:
    before = alice_state(sdc, world, alices)
    queued = list(jobqueue.enqueued)
    seen = set()
    for method, path, body in requests_on(alices, world):
        if (method, path, repr(body)) in seen:
            continue
        seen.add((method, path, repr(body)))
        answer = call(world.bob, method, path, **({"json": body} if body is not None else {}))
        assert answer.status_code == 404, (method, path, answer.get_json())
        assert answer.get_json()["code"] == "ResourceNotFound", (method, path)
        # and nothing in the answer leaks what alice has
        assert "hunter2" not in answer.get_data(as_text=True)
    assert alice_state(sdc, world, alices) == before
    assert jobqueue.enqueued == queued


def test_bob_cannot_provision_from_alices_private_image_or_network(
        call: Any, sdc: Any, world: World, alices: dict[str, str], jobqueue: Any) -> None:
    before = alice_state(sdc, world, alices)
    queued = list(jobqueue.enqueued)
    for body in ({"package": "small", "image": world.alice.image_uuid},
                 {"package": "small", "image": "alice-private"},
                 {"package": "small", "image": "base-64",
                  "networks": [world.alice.network_uuid]}):
        answer = call(world.bob, "post", "/my/machines", json=body)
        assert answer.status_code in (404, 409), answer.get_json()
        assert answer.get_json()["code"] in ("InvalidArgument", "ResourceNotFound")
    assert call(world.bob, "get", "/my/machines").get_json() == []
    assert alice_state(sdc, world, alices) == before
    assert jobqueue.enqueued == queued


def test_bob_lists_see_nothing_of_alices(call: Any, world: World,
                                         alices: dict[str, str]) -> None:
    assert call(world.bob, "get", "/my/machines").get_json() == []
    assert call(world.bob, "get", "/my/machines?name=secret").get_json() == []
    assert call(world.bob, "get", "/my/machines?tag.role=db").get_json() == []
    assert world.alice.image_uuid not in {
        i["id"] for i in call(world.bob, "get", "/my/images?state=all").get_json()}
    assert world.alice.network_uuid not in {
        n["id"] for n in call(world.bob, "get", "/my/networks").get_json()}
    assert [k["fingerprint"] for k in call(world.bob, "get", "/my/keys").get_json()] == \
        [world.bob.signer.fingerprint]
