"""The main path through real processes: provision, act, destroy, concurrency, failure."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from typing import Any

import pytest
from celery import Celery

from headnode.cli.client import ApiError
from schemas.agent import agent_queue, agent_task
from tests.support.wait import wait_until

PROVISION_STEPS = ["validate", "ensure_image", "create_machine", "commit_usage"]


@pytest.fixture(scope="module")
def seeded(cloud: Any) -> dict[str, Any]:
    return cloud.seed()


def provision(cloud: Any, seeded: dict[str, Any], package: str = "small",
              **extra: Any) -> dict[str, Any]:
    body = {"owner": "alice", "package": package, "image": "base-64", **extra}
    return cloud.api.post("/ops/machines", body)


def step_names(results: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in results]


def test_provision_stop_start_reboot_destroy(cloud: Any, seeded: dict[str, Any]) -> None:
    machine = provision(cloud, seeded, alias="web-1", tags={"role": "web"})
    assert machine["state"] == "provisioning"
    assert machine["server_uuid"] in cloud.agents.values()

    job = cloud.wait_job(machine["job_uuid"])
    assert job["execution"] == "succeeded", job
    assert step_names(job["chain_results"]) == PROVISION_STEPS
    for result in job["chain_results"]:
        assert result["started_at"] and result["finished_at"] and result["error"] is None
    running = cloud.api.get(f"/ops/machines/{machine['uuid']}")
    assert running["state"] == "running" and running["job_uuid"] is None
    assert running["tags"] == {"role": "web"}
    server = cloud.server(machine["server_uuid"])
    assert server["ram_committed_mb"] >= 1024 and server["ram_inflight_mb"] == 0

    for action, state in (("stop", "stopped"), ("start", "running"), ("reboot", "running")):
        started = cloud.api.post(f"/ops/machines/{machine['uuid']}", params={"action": action})
        job = cloud.wait_job(started["job_uuid"])
        assert job["execution"] == "succeeded", job
        assert step_names(job["chain_results"]) == [action]
        assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == state

    jobs = cloud.api.get("/ops/jobs", params={"machine_uuid": machine["uuid"]})
    assert [j["name"] for j in jobs] == ["reboot", "start", "stop", "provision"]

    before = cloud.server(machine["server_uuid"])["ram_committed_mb"]
    deleted = cloud.api.delete(f"/ops/machines/{machine['uuid']}")
    job = cloud.wait_job(deleted["job_uuid"])
    assert job["execution"] == "succeeded", job
    assert step_names(job["chain_results"]) == ["destroy_machine", "release_holdings",
                                                "mark_destroyed"]
    with pytest.raises(ApiError) as err:
        cloud.api.get(f"/ops/machines/{machine['uuid']}")
    assert err.value.status == 404
    assert cloud.server(machine["server_uuid"])["ram_committed_mb"] == before - 1024


def test_second_change_while_busy_is_refused(cloud: Any, seeded: dict[str, Any]) -> None:
    machine = provision(cloud, seeded)
    with pytest.raises(ApiError) as err:
        cloud.api.post(f"/ops/machines/{machine['uuid']}", params={"action": "stop"})
    assert err.value.status == 409
    cloud.wait_job(machine["job_uuid"])


def test_concurrent_provisions_spread_without_overcommit(cloud: Any,
                                                         seeded: dict[str, Any]) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        machines = list(pool.map(lambda i: provision(cloud, seeded, package="small",
                                                     alias=f"burst-{i}"), range(20)))
    jobs = [cloud.wait_job(m["job_uuid"], timeout=120) for m in machines]
    assert all(j["execution"] == "succeeded" for j in jobs), [j["error"] for j in jobs]
    placed = {m["server_uuid"] for m in machines}
    assert placed == set(cloud.agents.values()), "20 provisions should use all 3 servers"
    for server_uuid in placed:
        server = cloud.server(server_uuid)
        used = server["ram_inflight_mb"] + server["ram_committed_mb"]
        assert used <= server["ram_mb"] * 0.85, server
        on_it = cloud.api.get("/ops/machines", params={"server_uuid": server_uuid})
        assert sum(m["ram_mb"] for m in on_it) == server["ram_committed_mb"]


def test_full_fleet_refuses_at_once_and_leaves_nothing(cloud: Any,
                                                       seeded: dict[str, Any]) -> None:
    cloud.api.post("/ops/packages", {"name": "giant", "memory": 64 * 1024, "disk": 10240})
    machines_before = cloud.api.get("/ops/machines")
    jobs_before = cloud.api.get("/ops/jobs")
    with pytest.raises(ApiError) as err:
        provision(cloud, seeded, package="giant")
    assert err.value.status == 409
    assert err.value.code == "InsufficientCapacity"
    assert "no server can fit 64 GiB of RAM" in err.value.message
    assert f"{len(cloud.agents)} lack RAM" in err.value.message
    assert cloud.api.get("/ops/machines") == machines_before
    assert cloud.api.get("/ops/jobs") == jobs_before


def test_failed_provision_marks_failed_and_releases(cloud: Any, seeded: dict[str, Any]) -> None:
    target = cloud.agents["agent0"]
    before = cloud.server(target)
    # Tell that sim node to fail every machine_create (its fault-injection switch), through
    # the broker like any head-node message.
    client = Celery(broker=cloud.env["SDC_REDIS_URL"], backend=cloud.env["SDC_REDIS_URL"])
    client.send_task(agent_task("sim_faults"),
                     args=[target, {"fail": {"machine_create": "disk on fire"}}, None],
                     queue=agent_queue(target)).get(timeout=30)
    try:
        machine = provision(cloud, seeded, server_uuid=target)
        assert machine["server_uuid"] == target
        job = cloud.wait_job(machine["job_uuid"])
    finally:
        client.send_task(agent_task("sim_faults"), args=[target, {"fail": {}}, None],
                         queue=agent_queue(target)).get(timeout=30)
    assert job["execution"] == "failed"
    assert job["error"]["step"] == "create_machine"
    assert "disk on fire" in job["error"]["message"]
    assert step_names(job["onerror_results"]) == ["remove_from_node", "release_reservation",
                                                  "release_nics", "mark_failed"]
    assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "failed"
    after = cloud.server(target)
    assert after["ram_inflight_mb"] == before["ram_inflight_mb"]
    assert after["machine_count"] == before["machine_count"]


def test_killed_agent_goes_unknown_and_comes_back(cloud: Any, seeded: dict[str, Any]) -> None:
    machine = provision(cloud, seeded, server_uuid=cloud.agents["agent1"])
    assert cloud.wait_job(machine["job_uuid"])["execution"] == "succeeded"
    server_uuid = cloud.agents["agent1"]

    killed_at = time.monotonic()
    cloud.procs.kill("agent1", signal.SIGKILL)
    wait_until(lambda: cloud.server(server_uuid)["status"] == "unknown", timeout=20,
               interval=0.2, message="the server to become unknown")
    assert time.monotonic() - killed_at <= 15
    assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "unknown"

    cloud.start_agent(1, server_uuid)
    wait_until(lambda: cloud.server(server_uuid)["status"] == "running", timeout=20,
               interval=0.2, message="the server to run again")
    wait_until(lambda: cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "running",
               timeout=20, interval=0.2, message="the machine to be running again")
