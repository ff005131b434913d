"""Cancelling provisions in flight, with real processes: API, workflow worker, beat and sim
agents. A sim node's latency switch keeps the node busy long enough to cancel; afterwards the
server's reservations are what they were, the address is free, and the node has no machine."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from celery import Celery

from headnode.cli.client import ApiError
from schemas.agent import agent_queue, agent_task
from tests.integration.conftest import sdc
from tests.support.wait import wait_until

#: how long the slowed node operation takes: long enough to cancel during it
SLOW_MS = 4000
ROOM = ("ram_inflight_mb", "disk_inflight_mb", "ram_committed_mb", "disk_committed_mb",
        "machine_count")



@pytest.fixture(scope="module")
def seeded(cloud: Any) -> dict[str, Any]:
    seed = cloud.seed()
    cloud.api.post("/ops/networks", {"name": "front", "subnet": "10.55.0.0/24",
                                     "gateway": "10.55.0.1"})
    return seed


@pytest.fixture(scope="module")
def broker(cloud: Any) -> Celery:
    return Celery(broker=cloud.env["SDC_REDIS_URL"], backend=cloud.env["SDC_REDIS_URL"])


def node_call(broker: Celery, server_uuid: str, op: str, params: dict[str, Any]) -> Any:
    """Ask a sim node directly, through the broker, as the head node would."""
    return broker.send_task(agent_task(op), args=[server_uuid, params, None],
                            queue=agent_queue(server_uuid)).get(timeout=30)


@pytest.fixture
def slow(broker: Celery, cloud: Any) -> Iterator[Any]:
    """``slow(server, op)``: that node's ``op`` takes SLOW_MS, until the test ends."""
    touched: list[str] = []

    def make(server_uuid: str, op: str) -> None:
        node_call(broker, server_uuid, "sim_faults", {"latency_ms": {op: SLOW_MS}})
        touched.append(server_uuid)

    yield make
    for server_uuid in touched:
        node_call(broker, server_uuid, "sim_faults", {})


def room(cloud: Any, server_uuid: str) -> dict[str, Any]:
    server = cloud.server(server_uuid)
    return {key: server[key] for key in ROOM}


def front_ips_in_use(cloud: Any) -> list[str]:
    return [ip["ip"] for ip in cloud.api.get("/ops/networks/front/ips")
            if not ip.get("reserved")]


def on_node(broker: Celery, server_uuid: str, machine_uuid: str) -> str | None:
    """The machine's state on the node, None if the node has no such machine."""
    outcome = node_call(broker, server_uuid, "machine_load", {"uuid": machine_uuid})
    if outcome["ok"]:
        return str(outcome["result"]["machine"]["state"])
    assert outcome["error"]["code"] == "MachineNotFound", outcome
    return None


def wait_ended(cloud: Any, job_uuid: str, timeout: float = 60) -> dict[str, Any]:
    return wait_until(
        lambda: (lambda j: j if j["execution"] in ("succeeded", "failed", "canceled")
                 else None)(cloud.api.get(f"/ops/jobs/{job_uuid}")),
        timeout=timeout, interval=0.1, message=f"job {job_uuid} to end")


def wait_in_flight(cloud: Any, job_uuid: str) -> None:
    """Until the job's agent step has been sent and waits for the node's reply."""
    def waiting() -> bool:
        job = cloud.api.get(f"/ops/jobs/{job_uuid}")
        last = (job["chain_results"] or [{}])[-1]
        return last.get("name") == "ensure_image" and last.get("finished_at") is None
    wait_until(waiting, timeout=30, interval=0.05, message=f"job {job_uuid} to wait for a node")


def provision(cloud: Any, server_uuid: str) -> dict[str, Any]:
    return dict(cloud.api.post("/ops/machines", {"owner": "alice", "package": "small",
                                                 "image": "base-64",
                                                 "server_uuid": server_uuid}))


def assert_nothing_left(cloud: Any, broker: Celery, server_uuid: str,
                        machine: dict[str, Any], before: dict[str, Any]) -> None:
    assert room(cloud, server_uuid) == before
    assert machine["ips"][0] not in front_ips_in_use(cloud)
    record = cloud.api.get(f"/ops/machines/{machine['uuid']}")
    assert record["state"] == "failed" and record["ips"] == []
    # The node may still be busy with the abandoned create: once it is done, no machine.
    wait_until(lambda: on_node(broker, server_uuid, machine["uuid"]) is None, timeout=30,
               interval=0.5, message="the node to have no such machine")
    time.sleep(SLOW_MS / 1000 + 1)  # nothing comes back after it is gone
    assert on_node(broker, server_uuid, machine["uuid"]) is None
    assert room(cloud, server_uuid) == before


@pytest.mark.parametrize("slow_op", ["machine_create", "image_ensure_present"])
def test_cancel_a_provision_while_the_node_works(cloud: Any, seeded: dict[str, Any],
                                                 broker: Celery, slow: Any,
                                                 slow_op: str) -> None:
    # machine_create: canceled while the node creates (the machine exists there already);
    # image_ensure_present: canceled before the node created it (it creates after the
    # clean-up's destroy has run: its late reply has the machine destroyed again)
    target = cloud.agents["agent1"]
    before = room(cloud, target)
    slow(target, slow_op)
    machine = provision(cloud, target)
    assert machine["ips"][0] in front_ips_in_use(cloud)
    assert room(cloud, target) != before
    wait_in_flight(cloud, machine["job_uuid"])
    if slow_op == "machine_create":
        wait_until(lambda: on_node(broker, target, machine["uuid"]) == "provisioning",
                   timeout=30, interval=0.1, message="the node to be creating the machine")

    asked = time.monotonic()
    canceled = cloud.api.post(f"/ops/jobs/{machine['job_uuid']}/cancel")
    assert canceled["cancel_requested_at"] and canceled["canceled_by"]["type"] == "operator"
    job = wait_ended(cloud, machine["job_uuid"], timeout=SLOW_MS / 1000 - 1)
    took = time.monotonic() - asked
    assert job["execution"] == "canceled", job
    asked_at = datetime.fromisoformat(job["cancel_requested_at"])
    ended_at = datetime.fromisoformat(job["finished_at"])
    print(f"cancel of a provision in flight ({slow_op} slowed): the job ended "
          f"{(ended_at - asked_at).total_seconds():.3f} s after the request was recorded, "
          f"seen by the client after {took:.2f} s")
    ensure = job["chain_results"][-1]
    assert ensure["name"] == "ensure_image" and ensure["error"]["code"] == "Canceled"
    assert job["error"]["code"] == "Canceled" and job["error"]["step"] == "ensure_image"
    assert [r["name"] for r in job["onerror_results"]] == [
        "remove_from_node", "release_reservation", "release_nics", "mark_failed"]
    assert all(r["error"] is None for r in job["onerror_results"])

    assert_nothing_left(cloud, broker, target, machine, before)
    # the node's late reply was ignored, and made the destroy go again
    late = cloud.api.get(f"/ops/jobs/{machine['job_uuid']}")
    assert late["execution"] == "canceled"
    assert late["chain_results"][-1]["late_replies"][0]["repeated"] == ["remove_from_node"]
    assert late["onerror_results"] == job["onerror_results"]


def test_cancel_from_the_command_line(cloud: Any, seeded: dict[str, Any], broker: Celery,
                                      slow: Any) -> None:
    target = cloud.agents["agent2"]
    before = room(cloud, target)
    slow(target, "machine_create")
    machine = provision(cloud, target)
    wait_in_flight(cloud, machine["job_uuid"])

    result = sdc(cloud, "job", "cancel", machine["job_uuid"], "--wait")
    assert result.returncode == 0, result.stderr
    assert "canceled" in result.stdout and "cancel asked" in result.stdout
    shown = sdc(cloud, "job", "get", machine["job_uuid"])
    assert shown.returncode == 0 and "cancel asked" in shown.stdout
    assert "Canceled" in shown.stdout
    as_json = json.loads(sdc(cloud, "--json", "job", "get", machine["job_uuid"]).stdout)
    assert as_json["execution"] == "canceled" and as_json["cancel_requested_at"]

    # twice: the job has ended, the answer says so and nothing changes
    again = sdc(cloud, "job", "cancel", machine["job_uuid"])
    assert again.returncode == 1
    assert "JobFinished" in again.stderr and "(canceled)" in again.stderr
    missing = sdc(cloud, "job", "cancel", "00000000-0000-4000-8000-000000000000")
    assert missing.returncode == 1 and "ResourceNotFound" in missing.stderr
    assert_nothing_left(cloud, broker, target, machine, before)


def test_a_finished_job_cannot_be_canceled(cloud: Any, seeded: dict[str, Any]) -> None:
    machine = provision(cloud, cloud.agents["agent0"])
    assert wait_ended(cloud, machine["job_uuid"])["execution"] == "succeeded"
    with pytest.raises(ApiError) as err:
        cloud.api.post(f"/ops/jobs/{machine['job_uuid']}/cancel")
    assert (err.value.status, err.value.code) == (409, "JobFinished")
    assert "(succeeded)" in err.value.message
    assert cloud.api.get(f"/ops/machines/{machine['uuid']}")["state"] == "running"
    assert cloud.api.get(f"/ops/jobs/{machine['job_uuid']}")["cancel_requested_at"] is None
