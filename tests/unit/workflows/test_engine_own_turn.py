"""``Step(own_turn=True)``: a long local step (SSH to a node) runs in a turn of its own,
outside the job's lock and transaction, and its outcome is recorded by a short turn after;
on the real PostgreSQL with a recording transport."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from headnode.services import jobs as job_service
from tests.unit.workflows.conftest import RecordingTransport, get_job, pump
from workflows.engine import Engine, Step, StepContext, StepFailed, Workflow, new_job, register

#: what each own-turn step saw while it ran, by job: [(step, observations)]
SEEN: dict[str, list[tuple[str, dict[str, Any]]]] = {}
#: what an own-turn step does while it runs (set by a test): called with the job's uuid
DURING: dict[str, Callable[[str], None]] = {}


def lock_is_free(ctx: StepContext) -> bool:
    """Whether another transaction could take the job's row lock now."""
    with ctx.session.get_bind().connect() as other:
        try:
            other.execute(text("SET lock_timeout = '200ms'"))
            other.execute(text("SELECT 1 FROM jobs WHERE uuid = :u FOR UPDATE NOWAIT"),
                          {"u": ctx.job.uuid})
            return True
        except OperationalError:
            return False
        finally:
            other.rollback()


def long_step(name: str, fails: bool = False) -> Callable[[StepContext], dict[str, Any]]:
    def run(ctx: StepContext) -> dict[str, Any]:
        entry = ctx.job.chain_results[-1] if ctx.job.phase == "chain" \
            else ctx.job.onerror_results[-1]
        seen = {"lock_free": lock_is_free(ctx), "entry": entry["name"],
                "open": entry["finished_at"] is None}
        SEEN.setdefault(ctx.job.uuid, []).append((name, seen))
        if name in DURING:
            DURING[name](ctx.job.uuid)
        if fails:
            raise StepFailed("NodeBroke", f"{name} failed")
        return {"did": name}
    return run


def quick(name: str) -> Callable[[StepContext], dict[str, Any]]:
    def run(ctx: StepContext) -> dict[str, Any]:
        SEEN.setdefault(ctx.job.uuid, []).append((name, {}))
        return {"did": name}
    return run


register(Workflow("t-own", chain=(
    Step("a", 10, run=quick("a")),
    Step("b", 10, run=long_step("b"), own_turn=True),
    Step("c", 10, run=quick("c")),
), onerror=(Step("undo", 10, run=long_step("undo"), own_turn=True),)))
register(Workflow("t-own-fails", chain=(
    Step("a", 10, run=quick("a")),
    Step("b", 10, run=long_step("b", fails=True), own_turn=True),
    Step("c", 10, run=quick("c")),
), onerror=(Step("undo", 10, run=long_step("undo"), own_turn=True),)))


def start(ctx: Any, name: str) -> str:
    with ctx.transaction() as session:
        job = new_job(session, name, machine_uuid=None, server_uuid=None, owner_uuid=None)
        session.flush()
        return job.uuid


def steps_seen(job_uuid: str) -> list[str]:
    return [name for name, _ in SEEN.get(job_uuid, [])]


@pytest.fixture(autouse=True)
def _fresh() -> Any:
    DURING.clear()
    yield
    DURING.clear()


def test_an_own_turn_step_starts_in_a_new_turn_and_runs_without_the_lock(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-own")
    engine.run_step(job_uuid, 1)
    # "a" ran, then the job committed and sent the message that runs "b"
    assert steps_seen(job_uuid) == ["a"]
    assert transport.kinds() == ["step"]
    assert [e["name"] for e in get_job(ctx, job_uuid).chain_results] == ["a"]
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded", job.error
    assert steps_seen(job_uuid) == ["a", "b", "c"]
    # "b" ran with the job's row free and its own start already committed
    assert dict(SEEN[job_uuid])["b"] == {"lock_free": True, "entry": "b", "open": True}
    assert [e["result"] for e in job.chain_results] == [{"did": "a"}, {"did": "b"},
                                                        {"did": "c"}]
    assert all(e["finished_at"] for e in job.chain_results)


def test_a_redelivered_message_and_a_cancel_do_not_wait_for_it(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-own")
    engine.run_step(job_uuid, 1)

    def meanwhile(uuid: str) -> None:
        # the broker delivers the step's message again (a visibility timeout), then an
        # operator cancels: neither waits for the step, neither runs it twice
        began = time.monotonic()
        engine.run_step(uuid, get_job(ctx, uuid).attempt)
        job_service.cancel_job(ctx, uuid, {"type": "operator"})
        engine.cancel(uuid)
        assert time.monotonic() - began < 5

    DURING["b"] = meanwhile
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    # "b" ran once and its end was the step boundary the cancel stopped at
    assert steps_seen(job_uuid) == ["a", "b", "undo"]
    assert job.chain_results[-1]["result"] == {"did": "b"}
    assert job.execution == "canceled" and job.error["step"] == "c"


def test_a_failing_own_turn_step_runs_the_onerror_chain(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-own-fails")
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed"
    assert job.error == {"step": "b", "code": "NodeBroke", "message": "b failed"}
    assert steps_seen(job_uuid) == ["a", "b", "undo"]
    assert [e["result"] for e in job.onerror_results] == [{"did": "undo"}]


def test_a_step_the_sweep_timed_out_meanwhile_is_not_recorded(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-own")
    engine.run_step(job_uuid, 1)
    # the step outlives its deadline: the sweep fails it while it still runs
    DURING["b"] = lambda uuid: engine.sweep(now=time.time() + 1000)
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed"
    assert job.chain_results[-1]["error"]["code"] == "StepTimeout"
    assert job.chain_results[-1]["result"] is None  # its late outcome changed nothing
    assert steps_seen(job_uuid) == ["a", "b", "undo"]


def test_only_a_local_step_may_have_its_own_turn() -> None:
    with pytest.raises(ValueError, match="only a local step"):
        Step("remote", 10, agent_op="probe", own_turn=True)
