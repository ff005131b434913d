"""The migration workflows driven through the engine on the real PostgreSQL, each agent call
answered by hand as the source's or the target's agent would: every phase's steps, and a
failure at each phase ending with the machine on one node and no room held."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import machines as machine_svc
from headnode.services import migrations as svc
from headnode.services import networks
from headnode.services.errors import Conflict
from headnode.store.models import Migration, Reservation
from tests.unit.headnode.services.conftest import server_row
from tests.unit.workflows.conftest import (
    RecordingTransport,
    failed,
    get_job,
    get_machine,
    make_server,
    ok,
    pump,
)
from tests.unit.workflows.test_machine_workflows import provision
from workflows.engine import Engine

CALLER = {"type": "operator"}
URL = "http://127.0.0.1:9/migrations/ticket"


@pytest.fixture
def two(ctx: Any, engine: Engine, transport: RecordingTransport,
        fleet: dict[str, Any]) -> dict[str, Any]:
    """A running machine on ``source``; ``target`` is the only other server."""
    target = make_server(ctx, hostname="cn2")
    networks.create_network(ctx, {"name": "external", "subnet": "10.77.0.0/24",
                                  "gateway": "10.77.0.1"})
    machine = provision(ctx, engine, transport, fleet, server_uuid=fleet["server"].uuid)
    return {"machine": machine["uuid"], "source": fleet["server"].uuid,
            "target": target.uuid}


def sums(ctx: Any, server_uuid: str) -> tuple[int, ...]:
    s = server_row(ctx, server_uuid)
    return (s.ram_inflight_mb, s.disk_inflight_mb, s.cpu_inflight, s.ram_committed_mb,
            s.disk_committed_mb, s.cpu_committed, s.machine_count, s.capped_count)


def migration(ctx: Any, machine_uuid: str) -> Migration:
    return svc.get_migration(ctx, machine_uuid)


def answer(engine: Engine, transport: RecordingTransport, server: str, op: str,
           result: dict[str, Any] | None = None, *, fail: str | None = None) -> dict[str, Any]:
    """The job's next agent call must be ``op`` to ``server``; answer it as that node."""
    pump(engine, transport)
    assert transport.agent, f"no agent call; expected {op}"
    to, sent_op, params, reply = transport.agent.popleft()
    assert (to, sent_op) == (server, op), (to, sent_op, params)
    outcome = failed(fail, f"{op} broke") if fail else ok(result or {}, server)
    engine.on_agent_reply(reply, outcome, from_server=server)
    pump(engine, transport)
    return params


def machine_state(uuid: str, state: str) -> dict[str, Any]:
    return {"machine": {"uuid": uuid, "state": state}}


def start(ctx: Any, engine: Engine, two: dict[str, Any], action: str, **kw: Any) -> str:
    started = svc.migrate(ctx, two["machine"], action, caller=CALLER, **kw)
    engine.run_step(started["job_uuid"], 1)
    return str(started["job_uuid"])


def do_begin(ctx: Any, engine: Engine, transport: RecordingTransport,
             two: dict[str, Any]) -> None:
    start(ctx, engine, two, "begin")
    params = answer(engine, transport, two["target"], "migration_target_prepare",
                    machine_state(two["machine"], "stopped"))
    assert params["spec"]["uuid"] == two["machine"] and params["spec"]["nics"]
    assert params["migration_uuid"] == migration(ctx, two["machine"]).uuid


def do_sync(engine: Engine, transport: RecordingTransport, two: dict[str, Any],
            number: int, **offer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One stream answered by both ends; (receive params, send params)."""
    snapshot = f"migration-{number}"
    received = answer(engine, transport, two["target"], "migration_receive",
                      {"receive": {"url": URL, "expires_at": 0, **offer}})
    sent = answer(engine, transport, two["source"], "migration_send",
                  {"sync": {"snapshot": snapshot, "parent": received["parent"],
                            "bytes": 1000 * number, "seconds": 0.5,
                            "received_bytes": 1000 * number}})
    assert received["snapshot"] == sent["snapshot"] == snapshot
    assert received["token"] == sent["token"] and len(sent["token"]) >= 32
    assert sent["url"] == URL
    return received, sent


def do_switch_agents(engine: Engine, transport: RecordingTransport, two: dict[str, Any],
                     syncs_before: int) -> None:
    machine = two["machine"]
    answer(engine, transport, two["source"], "machine_stop", machine_state(machine, "stopped"))
    do_sync(engine, transport, two, syncs_before + 1)
    answer(engine, transport, two["source"], "migration_hide",
           machine_state(machine, "stopped"))
    answer(engine, transport, two["target"], "migration_activate",
           machine_state(machine, "stopped"))
    answer(engine, transport, two["target"], "machine_start", machine_state(machine, "running"))


def test_begin_sync_switch_finalize(ctx: Any, engine: Engine, transport: RecordingTransport,
                                    two: dict[str, Any]) -> None:
    source_before, target_before = sums(ctx, two["source"]), sums(ctx, two["target"])
    do_begin(ctx, engine, transport, two)
    m = migration(ctx, two["machine"])
    assert (m.state, m.phase, m.target_server_uuid) == ("paused", "begin", two["target"])
    # the target holds the machine's size in flight
    assert sums(ctx, two["target"])[:3] == (1024, 10240, 100)
    # only the migration's own jobs may change the machine now
    with pytest.raises(Conflict) as refused:
        machine_svc.machine_action(ctx, two["machine"], "stop", CALLER)
    assert refused.value.code == "MachineMigrating"

    start(ctx, engine, two, "sync")
    first, first_sent = do_sync(engine, transport, two, 1)
    assert first["parent"] is None and "resume_token" not in first_sent
    start(ctx, engine, two, "sync")
    second, sent = do_sync(engine, transport, two, 2, resume_token="1-abc-def")
    assert second["parent"] == "migration-1"
    assert sent["resume_token"] == "1-abc-def"  # a cut receive's rest (SmartOS)
    m = migration(ctx, two["machine"])
    assert (m.state, m.phase, m.syncs, m.last_snapshot) == ("paused", "sync", 2, "migration-2")
    assert (m.sent_bytes, m.rate_bps) == (2000, 4000) and m.stream_token is None
    cleanups = [msg for msg in transport.sent if msg[0] == "raw"
                and msg[2] == "agent.migration_cleanup"]
    # after a sync only the source's older snapshots go; the target's wait for the switch
    assert {c[3][0] for c in cleanups} == {two["source"]}

    job_uuid = start(ctx, engine, two, "switch")
    do_switch_agents(engine, transport, two, 2)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded", job.error
    cleanups = [msg for msg in transport.sent if msg[0] == "raw"
                and msg[2] == "agent.migration_cleanup" and msg[3][0] == two["target"]]
    assert [c[3][1]["keep"] for c in cleanups] == [None]
    m = migration(ctx, two["machine"])
    assert (m.state, m.phase, m.syncs) == ("successful", "switch", 3)
    assert m.downtime_ms is not None and m.downtime_ms >= 0 and m.finished_at is None
    machine = get_machine(ctx, two["machine"])
    assert (machine.server_uuid, machine.state, machine.job_uuid) == (
        two["target"], "running", None)
    assert len(machine.nics) == 1  # its NIC (MAC and IP) went with it
    # the target's hold is its usage now; the source keeps its usage until finalize
    assert sums(ctx, two["target"]) == (0, 0, 0, 1024, 10240, 100, 1, 1)
    assert sums(ctx, two["source"]) == source_before
    with ctx.read() as session:
        assert session.get(Reservation, two["machine"]).server_uuid == two["target"]

    start(ctx, engine, two, "finalize")
    answer(engine, transport, two["source"], "machine_destroy",
           machine_state(two["machine"], "destroyed"))
    m = migration(ctx, two["machine"])
    assert (m.state, m.phase) == ("successful", "finalize") and m.finished_at is not None
    assert sums(ctx, two["source"]) == target_before  # nothing left there
    assert [e["message"] for e in m.progress_history][-1] == "removed the original instance"
    # the machine is free again
    machine_svc.machine_action(ctx, two["machine"], "stop", CALLER)


def test_automatic_moves_a_stopped_machine_without_downtime(
        ctx: Any, engine: Engine, transport: RecordingTransport, two: dict[str, Any]) -> None:
    with ctx.transaction() as session:
        session.get(type(get_machine(ctx, two["machine"])), two["machine"]).state = "stopped"
    job_uuid = start(ctx, engine, two, "automatic", target_server=two["target"])
    answer(engine, transport, two["target"], "migration_target_prepare",
           machine_state(two["machine"], "stopped"))
    do_sync(engine, transport, two, 1)
    do_sync(engine, transport, two, 2)
    # neither stop nor start: the machine was stopped
    do_sync(engine, transport, two, 3)
    answer(engine, transport, two["source"], "migration_hide",
           machine_state(two["machine"], "stopped"))
    answer(engine, transport, two["target"], "migration_activate",
           machine_state(two["machine"], "stopped"))
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded", job.error
    skipped = [e["name"] for e in job.chain_results if e["result"] == {"skipped": True}]
    assert skipped == ["stop_source", "start_target"]
    m = migration(ctx, two["machine"])
    assert (m.state, m.automatic, m.downtime_ms) == ("successful", True, 0)
    assert get_machine(ctx, two["machine"]).server_uuid == two["target"]


def _assert_back_on_source(ctx: Any, two: dict[str, Any], before: dict[str, Any],
                           code: str) -> Migration:
    m = migration(ctx, two["machine"])
    assert m.state == "failed" and m.error is not None and m.error["code"] == code
    assert m.finished_at is not None and m.target_held is None
    machine = get_machine(ctx, two["machine"])
    assert (machine.server_uuid, machine.state, machine.job_uuid) == (
        two["source"], "running", None)
    assert sums(ctx, two["source"]) == before["source"]
    assert sums(ctx, two["target"]) == before["target"]
    return m


def _destroys_sent(transport: RecordingTransport, server: str) -> int:
    return sum(1 for msg in transport.sent if msg[0] == "raw"
               and msg[2] == "agent.machine_destroy" and msg[3][0] == server)


def test_failed_begin_leaves_nothing(ctx: Any, engine: Engine, transport: RecordingTransport,
                                     two: dict[str, Any]) -> None:
    before = {"source": sums(ctx, two["source"]), "target": sums(ctx, two["target"])}
    start(ctx, engine, two, "begin")
    answer(engine, transport, two["target"], "migration_target_prepare", fail="NoRoom")
    answer(engine, transport, two["target"], "migration_target_prepare", fail="NoRoom")
    # the target's copy (if it made one) goes, and the job waits for it
    answer(engine, transport, two["target"], "machine_destroy",
           machine_state(two["machine"], "destroyed"))
    assert not transport.agent  # the machine never stopped: nothing to show or start
    _assert_back_on_source(ctx, two, before, "NoRoom")
    assert _destroys_sent(transport, two["target"]) == 1
    # a new migration may begin
    start(ctx, engine, two, "begin")


def test_failed_sync_destroys_the_target_copy(ctx: Any, engine: Engine,
                                              transport: RecordingTransport,
                                              two: dict[str, Any]) -> None:
    before = {"source": sums(ctx, two["source"]), "target": sums(ctx, two["target"])}
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "sync")
    answer(engine, transport, two["target"], "migration_receive",
           {"receive": {"url": URL, "expires_at": 0}})
    answer(engine, transport, two["source"], "migration_send", fail="InsufficientResources")
    # a target that does not answer (its agent away) does not stop the clean-up
    answer(engine, transport, two["target"], "machine_destroy", fail="StepTimeout")
    assert not transport.agent
    m = _assert_back_on_source(ctx, two, before, "InsufficientResources")
    assert m.stream_token is None
    assert _destroys_sent(transport, two["target"]) == 1


@pytest.mark.parametrize("failing", ["machine_stop", "migration_hide", "migration_activate",
                                     "machine_start"])
def test_failed_switch_ends_on_the_source(ctx: Any, engine: Engine,
                                          transport: RecordingTransport, two: dict[str, Any],
                                          failing: str) -> None:
    before = {"source": sums(ctx, two["source"]), "target": sums(ctx, two["target"])}
    machine = two["machine"]
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "sync")
    do_sync(engine, transport, two, 1)
    start(ctx, engine, two, "switch")
    calls = [(two["source"], "machine_stop", machine_state(machine, "stopped")),
             (two["target"], "migration_receive", {"receive": {"url": URL}}),
             (two["source"], "migration_send", {"sync": {"snapshot": "migration-2",
                                                         "bytes": 10, "seconds": 0.1}}),
             (two["source"], "migration_hide", machine_state(machine, "stopped")),
             (two["target"], "migration_activate", machine_state(machine, "stopped")),
             (two["target"], "machine_start", machine_state(machine, "running"))]
    for server, op, result in calls:
        if op == failing:
            answer(engine, transport, server, op, fail="Broken")
            break
        answer(engine, transport, server, op, result)
    # the target copy (which may run, once the record moved) goes before the source starts
    answer(engine, transport, two["target"], "machine_destroy",
           machine_state(machine, "destroyed"))
    answer(engine, transport, two["source"], "migration_hide",
           machine_state(machine, "stopped"))
    answer(engine, transport, two["source"], "machine_start", machine_state(machine, "running"))
    assert not transport.agent
    _assert_back_on_source(ctx, two, before, "Broken")
    with ctx.read() as session:
        assert session.get(Reservation, machine).server_uuid == two["source"]


def test_abort_and_rollback(ctx: Any, engine: Engine, transport: RecordingTransport,
                            two: dict[str, Any]) -> None:
    before = {"source": sums(ctx, two["source"]), "target": sums(ctx, two["target"])}
    machine = two["machine"]
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "sync")
    do_sync(engine, transport, two, 1)
    start(ctx, engine, two, "abort")
    answer(engine, transport, two["target"], "machine_destroy",
           machine_state(machine, "destroyed"))
    answer(engine, transport, two["source"], "migration_cleanup", {"cleaned": []})
    m = migration(ctx, machine)
    assert (m.state, m.phase) == ("aborted", "abort") and m.finished_at is not None
    assert sums(ctx, two["source"]) == before["source"]
    assert sums(ctx, two["target"]) == before["target"]

    # again, switched this time, then rolled back
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "sync")
    do_sync(engine, transport, two, 1)
    start(ctx, engine, two, "switch")
    do_switch_agents(engine, transport, two, 1)
    with pytest.raises(Conflict) as refused:
        svc.migrate(ctx, machine, "abort", caller=CALLER)
    assert refused.value.code == "InvalidState" and "rollback" in refused.value.message
    start(ctx, engine, two, "rollback")
    answer(engine, transport, two["target"], "machine_stop", machine_state(machine, "stopped"))
    answer(engine, transport, two["target"], "migration_hide",
           machine_state(machine, "stopped"))
    answer(engine, transport, two["source"], "migration_hide",
           machine_state(machine, "stopped"))
    answer(engine, transport, two["source"], "machine_start", machine_state(machine, "running"))
    answer(engine, transport, two["target"], "machine_destroy",
           machine_state(machine, "destroyed"))
    answer(engine, transport, two["source"], "migration_cleanup", {"cleaned": []})
    m = migration(ctx, machine)
    assert m.state == "rolled_back" and m.finished_at is not None
    row = get_machine(ctx, machine)
    assert (row.server_uuid, row.state) == (two["source"], "running")
    assert sums(ctx, two["source"]) == before["source"]
    assert sums(ctx, two["target"]) == before["target"]


def test_a_switched_machine_may_stop_and_its_rollback_leaves_it_stopped(
        ctx: Any, engine: Engine, transport: RecordingTransport, two: dict[str, Any]) -> None:
    machine = two["machine"]
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "sync")
    do_sync(engine, transport, two, 1)
    start(ctx, engine, two, "switch")
    do_switch_agents(engine, transport, two, 1)
    with pytest.raises(Conflict) as refused:  # anything but power until finalize/rollback
        machine_svc.rename_machine(ctx, machine, "renamed", CALLER)
    assert refused.value.code == "MachineMigrating"
    stopping = machine_svc.machine_action(ctx, machine, "stop", CALLER)
    engine.run_step(stopping["job_uuid"], 1)
    answer(engine, transport, two["target"], "machine_stop", machine_state(machine, "stopped"))
    assert get_machine(ctx, machine).state == "stopped"

    start(ctx, engine, two, "rollback")
    answer(engine, transport, two["target"], "machine_stop", machine_state(machine, "stopped"))
    answer(engine, transport, two["target"], "migration_hide",
           machine_state(machine, "stopped"))
    answer(engine, transport, two["source"], "migration_hide",
           machine_state(machine, "stopped"))
    # no start on the source: the machine was stopped when the rollback began
    answer(engine, transport, two["target"], "machine_destroy",
           machine_state(machine, "destroyed"))
    answer(engine, transport, two["source"], "migration_cleanup", {"cleaned": []})
    assert migration(ctx, machine).state == "rolled_back"
    row = get_machine(ctx, machine)
    assert (row.server_uuid, row.state) == (two["source"], "stopped")
