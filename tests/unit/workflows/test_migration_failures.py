"""Migrations that fail after their switch or in their abort, and one canceled mid-stream:
each ends with the machine on exactly one node and no room held twice."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from headnode.services import migrations as svc
from headnode.store.models import Job, Migration
from tests.unit.workflows.conftest import RecordingTransport, get_job, get_machine, ok
from tests.unit.workflows.test_migration_workflows import (  # noqa: F401 - the fixture
    URL,
    answer,
    do_begin,
    do_switch_agents,
    do_sync,
    machine_state,
    start,
    sums,
    two,
)
from workflows.engine import Engine
from workflows.migration_steps import STREAM_QUIET


def switched(ctx: Any, engine: Engine, transport: RecordingTransport,
             two: dict[str, Any]) -> None:  # noqa: F811 - the fixture's name
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "sync")
    do_sync(engine, transport, two, 1)
    start(ctx, engine, two, "switch")
    do_switch_agents(engine, transport, two, 1)


def destroys(transport: RecordingTransport, server: str) -> int:
    return sum(1 for msg in transport.sent if msg[0] == "raw"
               and msg[2] == "agent.machine_destroy" and msg[3][0] == server)


def test_a_failed_abort_still_gives_everything_back(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any]) -> None:  # noqa: F811 - the fixture
    before = (sums(ctx, two["source"]), sums(ctx, two["target"]))
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "abort")
    answer(engine, transport, two["target"], "machine_destroy", fail="NodeAway")
    answer(engine, transport, two["target"], "machine_destroy", fail="NodeAway")
    m = svc.get_migration(ctx, two["machine"])
    assert m.state == "failed" and m.error == {"code": "NodeAway",
                                               "message": "machine_destroy broke"}
    assert (sums(ctx, two["source"]), sums(ctx, two["target"])) == before
    assert destroys(transport, two["target"]) == 1  # sent again, not waited for
    assert get_machine(ctx, two["machine"]).server_uuid == two["source"]


def test_a_failed_finalize_may_be_asked_again(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any]) -> None:  # noqa: F811 - the fixture
    empty = sums(ctx, two["target"])
    switched(ctx, engine, transport, two)
    start(ctx, engine, two, "finalize")
    for _ in range(2):  # one retry
        answer(engine, transport, two["source"], "machine_destroy", fail="NodeAway")
    m = svc.get_migration(ctx, two["machine"])
    assert (m.state, m.phase, m.finished_at) == ("successful", "switch", None)
    assert m.error is not None and m.error["code"] == "NodeAway"
    assert m.source_held is not None  # the source copy still holds its room
    start(ctx, engine, two, "finalize")
    answer(engine, transport, two["source"], "machine_destroy",
           machine_state(two["machine"], "destroyed"))
    m = svc.get_migration(ctx, two["machine"])
    assert m.finished_at is not None and m.source_held is None
    assert sums(ctx, two["source"]) == empty


def test_a_rollback_that_cannot_stop_the_target_leaves_it_switched(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any]) -> None:  # noqa: F811 - the fixture
    switched(ctx, engine, transport, two)
    after_switch = (sums(ctx, two["source"]), sums(ctx, two["target"]))
    machine = two["machine"]
    start(ctx, engine, two, "rollback")
    answer(engine, transport, two["target"], "machine_stop", fail="Stuck")
    # shown and started again where its record is: the target
    answer(engine, transport, two["target"], "migration_hide",
           machine_state(machine, "running"))
    answer(engine, transport, two["target"], "machine_start", machine_state(machine, "running"))
    m = svc.get_migration(ctx, machine)
    assert (m.state, m.phase, m.finished_at) == ("successful", "switch", None)
    assert get_machine(ctx, machine).server_uuid == two["target"]
    assert (sums(ctx, two["source"]), sums(ctx, two["target"])) == after_switch


def test_a_sync_canceled_mid_stream_cleans_up_again_at_the_late_reply(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any]) -> None:  # noqa: F811 - the fixture
    before = (sums(ctx, two["source"]), sums(ctx, two["target"]))
    do_begin(ctx, engine, transport, two)
    job_uuid = start(ctx, engine, two, "sync")
    answer(engine, transport, two["target"], "migration_receive",
           {"receive": {"url": URL, "expires_at": 0}})
    *_, reply = transport.agent.popleft()  # the send runs on the source
    with ctx.transaction() as session:
        job = session.get(Job, job_uuid)
        assert job is not None
        job.cancel_requested_at = datetime.now(UTC)
    assert engine.cancel(job_uuid)
    answer(engine, transport, two["target"], "machine_destroy",
           machine_state(two["machine"], "destroyed"))
    assert get_job(ctx, job_uuid).execution == "canceled"
    m = svc.get_migration(ctx, two["machine"])
    assert m.state == "failed" and m.stream_token is None
    assert (sums(ctx, two["source"]), sums(ctx, two["target"])) == before
    assert destroys(transport, two["target"]) == 1
    # the source finishes the stream after all: the target copy is destroyed once more
    engine.on_agent_reply(reply, ok({"sync": {"snapshot": "migration-1", "bytes": 1}},
                                    two["source"]), from_server=two["source"])
    assert destroys(transport, two["target"]) == 2
    assert svc.get_migration(ctx, two["machine"]).state == "failed"


def test_a_stream_is_given_time_while_it_moves_and_fails_once_quiet(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any]) -> None:  # noqa: F811 - the fixture
    before = (sums(ctx, two["source"]), sums(ctx, two["target"]))
    do_begin(ctx, engine, transport, two)
    job_uuid = start(ctx, engine, two, "sync")
    answer(engine, transport, two["target"], "migration_receive",
           {"receive": {"url": URL, "expires_at": 0}})
    transport.agent.popleft()  # the send: its source goes silent
    # before its deadline nothing happens, and the send is never asked again
    assert engine.sweep(now=time.time() + 60) == 0
    # past it, but the stream was heard from lately (the record changed): more time
    assert engine.sweep(now=time.time() + STREAM_QUIET + 1) == 1
    job = get_job(ctx, job_uuid)
    assert job.execution == "running" and job.chain_results[-1]["extended"] == 1
    assert not transport.agent
    with ctx.transaction() as session:  # nothing heard for longer than the window
        m = session.get(Migration, svc.get_migration(ctx, two["machine"]).uuid)
        assert m is not None
        m.updated_at = datetime.now(UTC) - timedelta(seconds=STREAM_QUIET + 1)
    assert engine.sweep(now=time.time() + 2 * STREAM_QUIET + 2) == 1
    answer(engine, transport, two["target"], "machine_destroy",
           machine_state(two["machine"], "destroyed"))
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed" and job.error is not None
    assert job.error["code"] == "StepTimeout"
    m = svc.get_migration(ctx, two["machine"])
    assert m.state == "failed" and m.error is not None and m.error["code"] == "StepTimeout"
    assert (sums(ctx, two["source"]), sums(ctx, two["target"])) == before


def test_the_source_is_shown_again_even_if_its_agent_misses_the_first_call(
        ctx: Any, engine: Engine, transport: RecordingTransport,
        two: dict[str, Any]) -> None:  # noqa: F811 - the fixture
    machine = two["machine"]
    do_begin(ctx, engine, transport, two)
    start(ctx, engine, two, "sync")
    do_sync(engine, transport, two, 1)
    start(ctx, engine, two, "switch")
    answer(engine, transport, two["source"], "machine_stop", machine_state(machine, "stopped"))
    answer(engine, transport, two["target"], "migration_receive", fail="NodeAway")
    answer(engine, transport, two["target"], "machine_destroy", fail="NodeAway")
    answer(engine, transport, two["source"], "migration_hide", fail="AgentRestarting")
    answer(engine, transport, two["source"], "migration_hide",
           machine_state(machine, "stopped"))
    answer(engine, transport, two["source"], "machine_start", machine_state(machine, "running"))
    row = get_machine(ctx, machine)
    assert (row.server_uuid, row.state) == (two["source"], "running")
    assert svc.get_migration(ctx, machine).state == "failed"
