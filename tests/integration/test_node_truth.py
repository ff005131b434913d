"""A node's truth against the records, with real processes (API, worker, beat, sim agents):

- a status report that leaves machines out does not destroy them: the node is asked, and
  only its confirmation destroys (a stray report the node contradicts destroys nothing);
- a machine confirmed gone gives back its reservation, its NIC and its address;
- a machine destroyed in the records but still on its node is an orphan until an operator
  purges it; its leaked address is released by ``sdc doctor --repair``;
- a failed machine its node runs is drift, never flipped to running, until deleted;
- after each, ``sdc doctor`` reports nothing.

Each test prints how long the cloud took to converge (run with ``-s`` to see the table).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from headnode.services import capacity
from headnode.store.db import session_factory
from headnode.store.models import Machine, utcnow
from schemas.agent import HEADNODE_QUEUE, agent_queue, agent_task
from sdccommon import signing
from tests.integration.conftest import SDC, sdc
from tests.support import credentials
from tests.support.wait import wait_until

# Questions and lost messages are asked again after 3 s; every node reports at least every
# 3 s (a change of the records alone shows only in the next periodic report).
CLOUD_ENV = {"SDC_RESEND_INTERVAL": "3", "SDC_BROKER_VISIBILITY_TIMEOUT": "5",
             "SDC_STATUS_INTERVAL": "3"}
RESEND = 3.0
#: fault -> (what was checked, seconds to converge)
FIGURES: dict[str, tuple[str, float]] = {}


@pytest.fixture(scope="module")
def seeded(cloud: Any) -> Iterator[dict[str, Any]]:
    seed = cloud.seed()
    cloud.api.post("/ops/networks", {"name": "external", "subnet": "10.88.0.0/24",
                                     "gateway": "10.88.0.1",
                                     "provision_start_ip": "10.88.0.10",
                                     "provision_end_ip": "10.88.0.250"})
    yield seed
    if FIGURES:
        print("\n| fault | what was checked | time to converge |\n|---|---|---|")
        for fault, (checked, seconds) in FIGURES.items():
            print(f"| {fault} | {checked} | {seconds:.1f} s |")


@pytest.fixture(scope="module")
def broker(cloud: Any) -> Celery:
    return Celery(broker=cloud.env["SDC_REDIS_URL"], backend=cloud.env["SDC_REDIS_URL"])



def doctor(cloud: Any, *args: str) -> tuple[int, list[dict[str, Any]]]:
    result = sdc(cloud, "doctor", "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def wait_doctor_clean(cloud: Any, timeout: float = 90) -> None:
    wait_until(lambda: doctor(cloud)[0] == 0, timeout=timeout, interval=0.5,
               message=lambda: f"sdc doctor to report nothing, not {doctor(cloud)[1]}")


def provision(cloud: Any, server_uuid: str, count: int, prefix: str) -> list[dict[str, Any]]:
    machines = [cloud.api.post("/ops/machines", {
        "owner": "alice", "package": "small", "image": "base-64", "alias": f"{prefix}-{i}",
        "server_uuid": server_uuid}) for i in range(count)]
    for m in machines:
        assert cloud.wait_job(m["job_uuid"])["execution"] == "succeeded"
    return [cloud.api.get(f"/ops/machines/{m['uuid']}") for m in machines]


def sim_faults(broker: Celery, server_uuid: str, fail: dict[str, str]) -> None:
    broker.send_task(agent_task("sim_faults"), args=[server_uuid, {"fail": fail}, None],
                     queue=agent_queue(server_uuid)).get(timeout=30)


def ips_in_use(cloud: Any) -> set[str]:
    return {a["ip"] for a in cloud.api.get("/ops/networks/external/ips") if not a["reserved"]}


def states(cloud: Any, machines: list[dict[str, Any]]) -> set[str]:
    return {cloud.api.get(f"/ops/machines/{m['uuid']}")["state"] for m in machines}


def change_records(cloud: Any, machine_uuid: str, **values: Any) -> None:
    """What the faults of the past left behind, written straight into the records."""
    sessions = session_factory(cloud.env["SDC_DATABASE_URL"])
    with sessions() as session, session.begin():
        machine = session.get(Machine, machine_uuid)
        assert machine is not None
        for key, value in values.items():
            setattr(machine, key, value)
        capacity.release(session, machine_uuid)  # the reservation, not the NIC


def test_a_report_leaving_machines_out_destroys_nothing_the_node_still_has(
        cloud: Any, seeded: dict[str, Any], broker: Celery) -> None:
    target = cloud.agents["agent0"]
    machines = provision(cloud, target, 6, "stray")
    before = cloud.server(target)
    ips = ips_in_use(cloud)
    # The node cannot answer for now (its machine_load fails) and its own reports are lost
    # (else its next report, within 3 s, clears the suspicion before it can be seen): the
    # suspicion must hold, asked again every few seconds, without destroying anything.
    sim_faults(broker, target, {"machine_load": "node busy", "status": "reports lost"})
    try:
        # A report listing none of them, as a second, empty agent for this node sent one.
        broker.send_task("events.server_status", args=[{
            "server_uuid": target, "machines": [], "images": [], "pool_size_mb": 1,
            "pool_used_mb": 0, "ram_mb": 1, "ram_free_mb": 1, "timestamp": time.time()}],
            queue=HEADNODE_QUEUE, headers={signing.SENDER: target})
        wait_until(lambda: {f["machine_uuid"] for f in doctor(cloud)[1]
                            if f["kind"] == "missing"} == {m["uuid"] for m in machines},
                   timeout=60, message="the six machines to be suspected")
        time.sleep(2 * RESEND)  # questions asked again, still unanswered
        assert states(cloud, machines) == {"running"}
        server = cloud.server(target)
        assert (server["ram_committed_mb"], server["machine_count"]) == (
            before["ram_committed_mb"], before["machine_count"])
        assert ips_in_use(cloud) == ips
    finally:
        sim_faults(broker, target, {})
    started = time.monotonic()
    wait_doctor_clean(cloud)
    FIGURES["report missing 6 machines (node still has them)"] = (
        "not destroyed while the node cannot answer; suspicion cleared by its next report "
        "or its answer, whichever comes first", time.monotonic() - started)
    assert states(cloud, machines) == {"running"}
    assert cloud.server(target)["machine_count"] == before["machine_count"]


def test_a_machine_its_node_lost_is_destroyed_on_confirmation_and_released(
        cloud: Any, seeded: dict[str, Any], broker: Celery) -> None:
    target = cloud.agents["agent1"]
    lost, kept = provision(cloud, target, 2, "lost")
    before = cloud.server(target)
    assert lost["ips"] and lost["ips"][0] in ips_in_use(cloud)
    sim_faults(broker, target, {"machine_load": "node busy"})
    try:
        # removed on the node behind the head node's back (vmadm delete on the node)
        broker.send_task(agent_task("machine_destroy"), args=[target, {"uuid": lost["uuid"]},
                                                              None],
                         queue=agent_queue(target)).get(timeout=30)
        wait_until(lambda: [f["machine_uuid"] for f in doctor(cloud)[1]
                            if f["kind"] == "missing"] == [lost["uuid"]],
                   timeout=60, message="the lost machine to be suspected")
        time.sleep(2 * RESEND)
        assert cloud.api.get(f"/ops/machines/{lost['uuid']}")["state"] == "running"
        assert lost["ips"][0] in ips_in_use(cloud)
    finally:
        sim_faults(broker, target, {})
    started = time.monotonic()
    wait_until(lambda: cloud.api.get("/ops/machines", params={"state": "destroyed",
                                                              "alias": lost["alias"]}),
               timeout=60, message="the node's confirmation to destroy the lost machine")
    converged = time.monotonic() - started
    server = cloud.server(target)
    assert server["ram_committed_mb"] == before["ram_committed_mb"] - lost["ram_mb"]
    assert server["machine_count"] == before["machine_count"] - 1
    assert lost["ips"][0] not in ips_in_use(cloud)
    assert kept["ips"][0] in ips_in_use(cloud)
    assert cloud.api.get(f"/ops/machines/{kept['uuid']}")["state"] == "running"
    wait_doctor_clean(cloud)
    FIGURES["machine removed on its node"] = (
        "not destroyed until the node answers; then destroyed, reservation, NIC and IP "
        "released", converged)


def test_a_machine_destroyed_in_the_records_but_on_its_node_is_an_orphan(
        cloud: Any, seeded: dict[str, Any], broker: Celery) -> None:
    target = cloud.agents["agent2"]
    [orphan] = provision(cloud, target, 1, "orphan")
    ip = orphan["ips"][0]
    started = time.monotonic()
    change_records(cloud, orphan["uuid"], state="destroyed", destroyed_at=utcnow())
    wait_until(lambda: {(f["kind"], f["machine_uuid"]) for f in doctor(cloud)[1]} == {
        ("orphan", orphan["uuid"]), ("leaked_ip", orphan["uuid"])},
        timeout=60, message="the orphan and its leaked address to be found")
    found = time.monotonic() - started
    [listed] = [f for f in doctor(cloud)[1] if f["kind"] == "orphan"]
    assert listed["operator"] == f"sdc doctor purge {target} {orphan['uuid']}"

    code, repaired = doctor(cloud, "--repair")
    assert code == 1  # the orphan is left to the operator
    assert {f["kind"]: f["repaired"] for f in repaired} == {"orphan": False, "leaked_ip": True}
    assert ip not in ips_in_use(cloud)
    assert [f["kind"] for f in doctor(cloud)[1]] == ["orphan"]  # still on its node

    purge = sdc(cloud, "doctor", "purge", target, orphan["uuid"], "--json")
    assert purge.returncode == 0, purge.stderr
    assert cloud.wait_job(json.loads(purge.stdout)["job_uuid"])["execution"] == "succeeded"
    wait_doctor_clean(cloud)
    FIGURES["record destroyed, machine still on node"] = (
        f"orphan and leaked IP listed ({found:.1f} s after the fault); repair releases "
        "the IP only; purge removes it", time.monotonic() - started)


def test_a_failed_machine_its_node_runs_is_drift_never_running_again(
        cloud: Any, seeded: dict[str, Any], broker: Celery) -> None:
    target = cloud.agents["agent2"]
    [failed] = provision(cloud, target, 1, "drift")
    started = time.monotonic()
    change_records(cloud, failed["uuid"], state="failed")
    sessions = session_factory(cloud.env["SDC_DATABASE_URL"])
    with sessions() as session, session.begin():
        from headnode.services.networks import release_nics

        release_nics(session, failed["uuid"])  # a failed provision holds no address
    wait_until(lambda: [(f["kind"], f["machine_uuid"]) for f in doctor(cloud)[1]] == [
        ("drift", failed["uuid"])], timeout=60, message="the drift to be found")
    found = time.monotonic() - started
    time.sleep(2 * 3.0)  # two more periodic reports, each saying it runs
    assert cloud.api.get(f"/ops/machines/{failed['uuid']}")["state"] == "failed"
    code, repaired = doctor(cloud, "--repair")
    assert code == 1 and [f["repaired"] for f in repaired] == [False]
    assert repaired[0]["operator"] == f"sdc vm delete {failed['uuid']}"

    deleted = sdc(cloud, "vm", "delete", failed["uuid"], "--json")
    assert deleted.returncode == 0, deleted.stderr
    assert cloud.wait_job(json.loads(deleted.stdout)["job_uuid"])["execution"] == "succeeded"
    wait_doctor_clean(cloud)
    FIGURES["failed machine reported running"] = (
        f"listed as drift ({found:.1f} s after the fault), stays failed through 2 reports; "
        "clean after sdc vm delete", time.monotonic() - started)


@pytest.mark.slow  # a minute of two agents; `make bench` runs it
def test_two_agents_for_one_node_destroy_nothing(cloud: Any, seeded: dict[str, Any]) -> None:
    """The incident itself: a second, empty agent for a node (another data dir) reports none
    of its machines and answers every question it takes with "not there". The real agent's
    reports list them again before the empty one's next report can agree."""
    from tests.integration.conftest import SIM_DISK_GB, SIM_RAM_MB

    target = cloud.agents["agent0"]
    machines = provision(cloud, target, 12, "twice")
    credentials.issue(cloud.workdir / "rogue", [target])
    cloud.procs.spawn("rogue", [SDC, "agent", "run", "--backend", "sim", "--server-uuid",
                                target, "--hostname", "cn0",
                                "--data-dir", str(cloud.workdir / "rogue"),
                                "--sim-ram-mb", str(SIM_RAM_MB),
                                "--sim-disk-gb", str(SIM_DISK_GB)], env=cloud.env)
    wanted = {m["uuid"] for m in machines}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            live = {m["uuid"] for m in cloud.api.get("/ops/machines",
                                                     params={"server_uuid": target})}
            assert wanted <= live, f"destroyed: {sorted(wanted - live)}"
            time.sleep(1)
        rogue_log = (cloud.workdir / "logs" / "rogue.log").read_text(errors="replace")
        assert "MachineNotFound" in rogue_log  # it did answer questions, and was outvoted
    finally:
        cloud.procs.stop("rogue")
    assert cloud.server(target)["machine_count"] >= len(machines)
    FIGURES["two agents for one node, 60 s"] = (
        "none of 12 machines destroyed although the empty agent answered 'not there'", 60.0)
