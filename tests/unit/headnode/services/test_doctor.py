"""The doctor on the real PostgreSQL: each kind of finding from real rows and a real status
report, what --repair fixes, what it leaves to an operator, and a clean fleet's empty bill."""

from __future__ import annotations

import time
from typing import Any

import pytest

from headnode.services import doctor, networks
from headnode.services.errors import Conflict
from headnode.store.models import Job, Machine, Reservation, new_uuid, utcnow
from tests.unit.headnode.services.conftest import add, make_machine, make_server, server_row
from tests.unit.workflows.test_node_truth import with_nic
from tests.unit.workflows.test_nodes import apply, committed_machine, status


def findings(ctx: Any, repair: bool = False) -> list[dict[str, Any]]:
    return list(doctor.doctor(ctx, repair_too=repair)["findings"])


def kinds(ctx: Any) -> list[tuple[str, str | None]]:
    return sorted((f["kind"], f["machine_uuid"]) for f in findings(ctx))


def report(ctx: Any, server_uuid: str, machines: list[tuple[str, str]]) -> None:
    apply(ctx, status(server_uuid, machines))


def set_machine(ctx: Any, uuid: str, **values: Any) -> None:
    with ctx.transaction() as session:
        row = session.get(Machine, uuid)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


def test_a_fleet_that_agrees_with_its_nodes_has_nothing(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    running = committed_machine(ctx, fleet, alias="a")
    with_nic(ctx, running)
    stopped = committed_machine(ctx, fleet, alias="b", state="stopped")
    make_machine(ctx, fleet, alias="c", state="failed")  # never made it onto the node
    report(ctx, server_uuid, [(running.uuid, "running"), (stopped.uuid, "stopped")])
    result = doctor.doctor(ctx)
    assert result["findings"] == [] and result["skipped"] == []
    assert result["servers"] == 1


def test_servers_without_a_report_or_alive_are_not_compared(ctx: Any,
                                                            fleet: dict[str, Any]) -> None:
    committed_machine(ctx, fleet, alias="a")  # would be missing, were there a report
    other = make_server(ctx, hostname="cn2", status="unknown")
    result = doctor.doctor(ctx)
    assert result["findings"] == []
    assert sorted(s["reason"] for s in result["skipped"]) == ["no status report yet",
                                                              "server is unknown"]
    assert other.uuid in [s["server_uuid"] for s in result["skipped"]]


def test_orphans_on_a_node(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    destroyed = make_machine(ctx, fleet, alias="d", state="destroyed", destroyed_at=utcnow())
    elsewhere = make_machine(ctx, fleet, alias="e", server_uuid=make_server(ctx).uuid)
    stray = new_uuid()
    report(ctx, server_uuid, [(destroyed.uuid, "running"), (elsewhere.uuid, "running"),
                              (stray, "stopped")])
    found = [f for f in findings(ctx) if f["server_uuid"] == server_uuid]
    assert sorted((f["kind"], f["machine_uuid"]) for f in found) == sorted(
        ("orphan", u) for u in (destroyed.uuid, elsewhere.uuid, stray))
    for f in found:
        assert f["repair"] is None  # the doctor never destroys on a node
        assert f["operator"] == f"sdc doctor purge {server_uuid} {f['machine_uuid']}"
    # repair leaves them as they are
    assert {f["machine_uuid"] for f in findings(ctx, repair=True)
            if f["kind"] == "orphan" and f["server_uuid"] == server_uuid} == {
        destroyed.uuid, elsewhere.uuid, stray}
    assert len([f for f in findings(ctx) if f["kind"] == "orphan"]) == 3


def test_a_destroy_newer_than_the_report_is_not_an_orphan(ctx: Any,
                                                         fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    machine = make_machine(ctx, fleet, alias="d")
    apply(ctx, status(server_uuid, [(machine.uuid, "running")], timestamp=time.time() - 5))
    set_machine(ctx, machine.uuid, state="destroyed", destroyed_at=utcnow())
    assert findings(ctx) == []


def test_missing_record_is_asked_about_on_repair(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    gone = committed_machine(ctx, fleet, alias="gone")
    report(ctx, server_uuid, [])  # the report itself raises the suspicion
    [finding] = findings(ctx)
    assert (finding["kind"], finding["machine_uuid"]) == ("missing", gone.uuid)
    assert "not asked yet" in finding["detail"] and finding["repair"] is None

    # a suspicion cleared by hand (or from before this version) is raised again by repair
    set_machine(ctx, gone.uuid, missing_since=None)
    [finding] = findings(ctx, repair=True)
    assert finding["repair"] and finding["repaired"]
    row = server_row(ctx, server_uuid)
    with ctx.read() as session:
        machine = session.get(Machine, gone.uuid)
        assert machine is not None and machine.state == "running"  # not destroyed by repair
        assert machine.missing_since == row.last_status_at
        assert machine.missing_asked_at is None


def test_a_failed_machine_the_node_runs_is_drift_for_an_operator(ctx: Any,
                                                                fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    failed = make_machine(ctx, fleet, alias="f", state="failed")
    report(ctx, server_uuid, [(failed.uuid, "running")])
    [finding] = findings(ctx, repair=True)
    assert (finding["kind"], finding["machine_uuid"], finding["repaired"]) == (
        "drift", failed.uuid, False)
    assert finding["operator"] == f"sdc vm delete {failed.uuid}"
    with ctx.read() as session:
        row = session.get(Machine, failed.uuid)
        assert row is not None and row.state == "failed"


def test_running_against_stopped_drift_is_recorded_on_repair(ctx: Any,
                                                            fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    machine = committed_machine(ctx, fleet, alias="s")
    report(ctx, server_uuid, [(machine.uuid, "running")])
    # our record says stopped although the node, in a report newer than it, says running
    with ctx.transaction() as session:
        session.execute(Machine.__table__.update().where(Machine.uuid == machine.uuid)
                        .values(state="stopped"))
    [finding] = findings(ctx, repair=True)
    assert (finding["kind"], finding["repaired"]) == ("drift", True)
    assert kinds(ctx) == []
    with ctx.read() as session:
        row = session.get(Machine, machine.uuid)
        assert row is not None and row.state == "running"


def test_leaked_reservation_and_address_are_released_on_repair(ctx: Any,
                                                               fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    leaky = committed_machine(ctx, fleet, alias="leaky")
    ip = with_nic(ctx, leaky)
    # destroyed in the records by a path that released nothing (the old status-report bug)
    set_machine(ctx, leaky.uuid, state="destroyed", destroyed_at=utcnow())
    report(ctx, server_uuid, [])
    assert kinds(ctx) == [("leaked_ip", leaky.uuid), ("leaked_reservation", leaky.uuid)]
    ip_finding = next(f for f in findings(ctx) if f["kind"] == "leaked_ip")
    assert ip in ip_finding["detail"]

    assert all(f["repaired"] for f in findings(ctx, repair=True))
    assert kinds(ctx) == []
    with ctx.read() as session:
        res = session.get(Reservation, leaky.uuid)
        assert res is not None and res.state == "released"
    assert server_row(ctx, server_uuid).machine_count == 0
    assert networks.list_network_ips(ctx, "external", None) == []


def test_a_running_machine_without_a_reservation_is_listed(ctx: Any,
                                                           fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    flipped = make_machine(ctx, fleet, alias="flipped")  # no reservation at all
    report(ctx, server_uuid, [(flipped.uuid, "running")])
    [finding] = findings(ctx, repair=True)
    assert (finding["kind"], finding["repaired"]) == ("leaked_reservation", False)
    assert "holds no reservation" in finding["detail"]


def test_machines_a_job_holds_are_left_to_the_job(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    busy = committed_machine(ctx, fleet, alias="busy", job_uuid=new_uuid())
    failing = make_machine(ctx, fleet, alias="failing", state="failed", job_uuid=new_uuid())
    report(ctx, server_uuid, [(failing.uuid, "running")])  # busy left out
    assert findings(ctx) == []
    set_machine(ctx, busy.uuid, job_uuid=None)
    assert kinds(ctx) == [("missing", busy.uuid)]


def test_stuck_jobs(ctx: Any, fleet: dict[str, Any]) -> None:
    now = time.time()
    job = add(ctx, Job(name="start", machine_uuid=None, server_uuid=fleet["server"].uuid,
                       execution="running", phase="chain", step_index=0, attempt=2,
                       step_deadline=now - 120, params={}, chain_results=[],
                       onerror_results=[], caller={}))
    add(ctx, Job(name="start", execution="running", phase="chain", step_index=0, attempt=2,
                 step_deadline=now + 60, params={}, chain_results=[], onerror_results=[],
                 caller={}))
    found = [f for f in findings(ctx) if f["kind"] == "stuck_job"]
    assert [f["job_uuid"] for f in found] == [job.uuid]
    assert "beat" in found[0]["operator"]
    assert doctor.doctor(ctx, stuck_after=300)["findings"] == []


def test_purge_starts_a_job_for_an_orphan_only(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    live = committed_machine(ctx, fleet, alias="live")
    stray = new_uuid()
    report(ctx, server_uuid, [(live.uuid, "running"), (stray, "running")])
    with pytest.raises(Conflict):
        doctor.purge_orphan(ctx, server_uuid, live.uuid, {"type": "operator"})
    started = doctor.purge_orphan(ctx, server_uuid, stray, {"type": "operator"})
    assert ctx.jobs.enqueued == [started["job_uuid"]]
    with ctx.read() as session:
        job = session.get(Job, started["job_uuid"])
        assert job is not None
        assert (job.name, job.server_uuid, job.machine_uuid) == ("purge_orphan", server_uuid,
                                                                 stray)
        assert job.params["chain"] == ["destroy_on_node"]

