"""Maintenance and forget on a real cloud (API, workflow worker, beat and sim agents as
processes): a server in maintenance takes no new machine while its own machine is stopped,
started and destroyed by real jobs; a forgotten server's still-running agent cannot bring it
back, its sysinfo and status refused by the worker for its revoked credentials."""

from __future__ import annotations

import time
from typing import Any

import pytest

from headnode.cli.client import ApiError
from headnode.placement.filters import MAINTENANCE
from tests.support.wait import wait_until

REVOKED = "credentials are revoked"


def create(cloud: Any, alias: str, server_uuid: str | None = None) -> dict[str, Any]:
    body = {"owner": "alice", "package": "small", "image": "base-64", "alias": alias}
    if server_uuid:
        body["server_uuid"] = server_uuid
    return cloud.api.post("/ops/machines", body)


def finished(cloud: Any, answer: dict[str, Any]) -> str:
    return str(cloud.wait_job(answer["job_uuid"])["execution"])


@pytest.fixture(scope="module")
def seeded(cloud: Any) -> dict[str, Any]:
    return cloud.seed()


def test_in_maintenance_no_new_machine_and_its_own_still_change(cloud: Any,
                                                                seeded: Any) -> None:
    target = cloud.agents["agent0"]
    machine = create(cloud, "kept", target)
    assert finished(cloud, machine) == "succeeded"
    cloud.api.put(f"/ops/servers/{target}", {"maintenance": True})

    with pytest.raises(ApiError) as refused:
        create(cloud, "pinned", target)
    assert refused.value.status == 409
    assert MAINTENANCE in str(refused.value)
    for i in range(4):  # the others still take machines, and only they do
        placed = create(cloud, f"free-{i}")
        assert finished(cloud, placed) == "succeeded"
        assert cloud.api.get(f"/ops/machines/{placed['uuid']}")["server_uuid"] != target

    uuid = machine["uuid"]
    for action, state in (("stop", "stopped"), ("start", "running")):
        answer = cloud.api.post(f"/ops/machines/{uuid}", params={"action": action})
        assert finished(cloud, answer) == "succeeded"
        assert cloud.api.get(f"/ops/machines/{uuid}")["state"] == state
    assert finished(cloud, cloud.api.delete(f"/ops/machines/{uuid}")) == "succeeded"
    cloud.api.put(f"/ops/servers/{target}", {"maintenance": False})
    assert finished(cloud, create(cloud, "back", target)) == "succeeded"


def test_a_forgotten_server_stays_forgotten(cloud: Any, seeded: Any) -> None:
    target = cloud.agents["agent1"]
    assert finished(cloud, create(cloud, "last", target)) == "succeeded"
    held = [m["uuid"] for m in cloud.api.get("/ops/machines", {"server_uuid": target})
            if m["state"] != "destroyed"]
    with pytest.raises(ApiError) as refused:
        cloud.api.delete(f"/ops/servers/{target}")
    assert refused.value.status == 409 and f" {len(held)} machine(s)" in str(refused.value)

    for uuid in held:
        assert finished(cloud, cloud.api.delete(f"/ops/machines/{uuid}")) == "succeeded"
    cloud.api.delete(f"/ops/servers/{target}")
    # its agent runs on: restarted, it registers again (sysinfo, status) and heartbeats
    cloud.restart("agent1")
    wait_until(lambda: REVOKED in cloud.procs.log("worker"), timeout=30,
               message="the worker to refuse the forgotten node's messages")
    wait_until(lambda: cloud.redis.hget("sdc:heartbeats", target), timeout=30,
               message="the forgotten node to heartbeat again")
    time.sleep(3)  # a reconcile round or more (SDC_RECONCILE_INTERVAL=2)
    assert target not in {s["uuid"] for s in cloud.api.get("/ops/servers")}
    others = {cloud.agents["agent0"], cloud.agents["agent2"]}
    assert {s["uuid"]: s["status"] for s in cloud.api.get("/ops/servers")} == \
        dict.fromkeys(others, "running")
