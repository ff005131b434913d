"""Cancelling jobs: the service records the cancel, the engine stops the chain at the next
step boundary and runs the onerror chain, on the real PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from headnode.services import jobs as job_service
from headnode.services.errors import Conflict, NotFound
from tests.unit.workflows.conftest import RecordingTransport, get_job, ok, pump
from workflows.engine import Engine, Step, StepContext, StepFailed, Workflow, new_job, register

SERVER = "22222222-2222-4222-8222-222222222222"
CALLER = {"type": "operator", "login": "ops-alice"}
#: (job uuid, step name) of every local step run, in order
CALLS: list[tuple[str, str]] = []


def local(name: str, raises: Exception | None = None) -> Callable[[StepContext], dict[str, Any]]:
    def run(ctx: StepContext) -> dict[str, Any]:
        CALLS.append((ctx.job.uuid, name))
        if raises is not None:
            raise raises
        return {"ran": name}
    return run


def fails_once(name: str) -> Callable[[StepContext], dict[str, Any]]:
    def run(ctx: StepContext) -> dict[str, Any]:
        CALLS.append((ctx.job.uuid, name))
        if calls(ctx.job.uuid).count(name) == 1:
            raise StepFailed("Flaky", "first time")
        return {"ran": name}
    return run


def undo_on_node(ctx: StepContext) -> dict[str, Any]:
    CALLS.append((ctx.job.uuid, "undo_on_node"))
    ctx.outbox.append((f"cn.{SERVER}", "agent.undo", [SERVER, {"job": ctx.job.uuid}, None]))
    return {"sent": "undo"}


def probe_params(ctx: StepContext) -> dict[str, Any]:
    return {"job": ctx.job.uuid}


def probe_result(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    CALLS.append((ctx.job.uuid, "on_result"))
    return {"got": result.get("value")}


register(Workflow("c-agent", chain=(
    Step("prepare", 10, run=local("prepare")),
    Step("remote", 60, agent_op="probe", params=probe_params, on_result=probe_result),
    Step("after", 10, run=local("after")),
), onerror=(
    Step("undo_on_node", 10, run=undo_on_node, repeat_on_late_reply=True),
    Step("forget", 10, run=local("forget")),
)))
register(Workflow("c-plain", chain=(
    Step("remote", 60, agent_op="probe", params=probe_params, on_result=probe_result),
    Step("after", 10, run=local("after")),
)))
# an onerror chain that cannot undo what the node does late: its agent step is not abandoned
register(Workflow("c-wait", chain=(
    Step("remote", 60, agent_op="probe", params=probe_params, on_result=probe_result),
    Step("after", 10, run=local("after")),
), onerror=(Step("forget", 10, run=local("forget")),)))
register(Workflow("c-retry", chain=(
    Step("flaky", 10, run=fails_once("flaky"), retries=1),
    Step("after", 10, run=local("after")),
), onerror=(Step("forget", 10, run=local("forget")),)))
register(Workflow("c-failing", chain=(
    Step("boom", 10, run=local("boom", raises=StepFailed("Boom", "bad"))),
), onerror=(
    Step("slow-clean", 10, run=fails_once("slow-clean"), retries=1),
    Step("forget", 10, run=local("forget")),
)))


def calls(job_uuid: str) -> list[str]:
    return [name for job, name in CALLS if job == job_uuid]


def start(ctx: Any, name: str) -> str:
    with ctx.transaction() as session:
        job = new_job(session, name, machine_uuid=None, server_uuid=SERVER, owner_uuid=None)
        session.flush()
        return job.uuid


def cancel(ctx: Any, job_uuid: str, caller: dict[str, Any] = CALLER) -> dict[str, Any]:
    return job_service.cancel_job(ctx, job_uuid, caller)


def waiting_for_agent(ctx: Any, engine: Engine, transport: RecordingTransport,
                      name: str = "c-agent") -> tuple[str, dict[str, Any]]:
    """A job of ``name`` whose agent step waits for its reply, and that reply's address."""
    job_uuid = start(ctx, name)
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    *_, reply = transport.agent.popleft()
    assert get_job(ctx, job_uuid).chain_results[-1]["finished_at"] is None
    return job_uuid, reply


def raw(transport: RecordingTransport) -> list[tuple[Any, ...]]:
    return [m for m in transport.sent if m[0] == "raw"]


def test_cancel_is_recorded_and_the_worker_told(ctx: Any) -> None:
    job_uuid = start(ctx, "c-agent")
    answer = cancel(ctx, job_uuid)
    assert answer["uuid"] == job_uuid and answer["execution"] == "queued"
    assert answer["cancel_requested_at"] is not None and answer["canceled_by"] == CALLER
    assert ctx.jobs.canceled == [job_uuid]
    job = get_job(ctx, job_uuid)
    assert job.cancel_requested_at == answer["cancel_requested_at"]
    assert job.canceled_by == CALLER


def test_a_queued_job_runs_only_its_onerror_chain(ctx: Any, engine: Engine,
                                                  transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "c-agent")
    cancel(ctx, job_uuid)
    assert engine.cancel(job_uuid) is True
    job = get_job(ctx, job_uuid)
    assert job.execution == "canceled" and job.phase == "onerror"
    assert job.started_at is not None and job.finished_at is not None
    assert job.step_deadline is None
    assert job.chain_results == []
    assert calls(job_uuid) == ["undo_on_node", "forget"]
    assert [e["name"] for e in job.onerror_results] == ["undo_on_node", "forget"]
    assert job.error is not None and job.error["code"] == "Canceled"
    assert job.error["step"] == "prepare"
    assert "before step prepare" in job.error["message"]
    assert "ops-alice" in job.error["message"]
    assert raw(transport) == [("raw", f"cn.{SERVER}", "agent.undo",
                               [SERVER, {"job": job_uuid}, None])]
    # the job's first message, still in the queue, is stale now
    engine.run_step(job_uuid, 1)
    assert calls(job_uuid) == ["undo_on_node", "forget"]


def test_the_first_step_message_stops_a_canceled_job(ctx: Any, engine: Engine,
                                                     transport: RecordingTransport) -> None:
    # the cancel message is behind the job's first message: that one stops the chain
    job_uuid = start(ctx, "c-agent")
    cancel(ctx, job_uuid)
    engine.run_step(job_uuid, 1)
    assert get_job(ctx, job_uuid).execution == "canceled"
    assert calls(job_uuid) == ["undo_on_node", "forget"]
    assert engine.cancel(job_uuid) is False  # then the cancel message finds nothing to do


def test_a_job_waiting_for_its_agent_is_abandoned_and_the_late_reply_ignored(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid, reply = waiting_for_agent(ctx, engine, transport)
    cancel(ctx, job_uuid)
    assert engine.cancel(job_uuid) is True
    job = get_job(ctx, job_uuid)
    assert job.execution == "canceled"
    prepare, remote = job.chain_results
    assert remote["name"] == "remote" and remote["finished_at"] is not None
    assert remote["error"]["code"] == "Canceled" and remote["result"] is None
    assert job.error is not None and job.error["step"] == "remote"
    assert "while step remote waited for the node" in job.error["message"]
    assert calls(job_uuid) == ["prepare", "undo_on_node", "forget"]
    assert job.attempt > reply["attempt"]
    assert len(raw(transport)) == 1

    # The node did the work after all and answers: nothing in the job's chain changes, but
    # what the node did is undone again (the first undo may have come before the work).
    engine.on_agent_reply(reply, ok({"value": 1}))
    pump(engine, transport)
    late = get_job(ctx, job_uuid)
    assert late.execution == "canceled" and late.finished_at == job.finished_at
    assert calls(job_uuid) == ["prepare", "undo_on_node", "forget", "undo_on_node"]
    assert late.chain_results[1]["result"] is None
    assert [e["name"] for e in late.onerror_results] == ["undo_on_node", "forget"]
    assert late.chain_results[1]["late_replies"][0]["ok"] is True
    assert late.chain_results[1]["late_replies"][0]["repeated"] == ["undo_on_node"]
    assert len(raw(transport)) == 2 and raw(transport)[0] == raw(transport)[1]
    assert not transport.agent  # the agent step was not sent again


def test_a_reply_before_the_cancel_message_ends_its_step_then_the_chain_stops(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid, reply = waiting_for_agent(ctx, engine, transport)
    cancel(ctx, job_uuid)
    engine.on_agent_reply(reply, ok({"value": 5}))  # in the queue before the cancel message
    job = get_job(ctx, job_uuid)
    assert job.execution == "canceled"
    assert job.chain_results[1]["result"] == {"got": 5}
    assert calls(job_uuid) == ["prepare", "on_result", "undo_on_node", "forget"]
    assert job.error is not None and job.error["step"] == "after"
    assert engine.cancel(job_uuid) is False


def test_a_queued_job_without_onerror_chain_ends_canceled_at_once(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "c-plain")
    cancel(ctx, job_uuid)
    assert engine.cancel(job_uuid) is True
    job = get_job(ctx, job_uuid)
    assert (job.execution, job.phase, job.chain_results, job.onerror_results) == (
        "canceled", "chain", [], [])
    engine.run_step(job_uuid, 1)  # its first message, still in the queue
    assert calls(job_uuid) == [] and transport.sent == []
    assert get_job(ctx, job_uuid).execution == "canceled"


def test_a_started_job_without_onerror_chain_cannot_be_canceled(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    # stopping it between steps would leave what its first steps did without the rest
    # (a destroy's records would still show the machine the node destroyed)
    job_uuid, reply = waiting_for_agent(ctx, engine, transport, "c-plain")
    with pytest.raises(Conflict) as err:
        cancel(ctx, job_uuid)
    assert err.value.code == "JobNotCancelable" and "no onerror chain" in err.value.message
    assert get_job(ctx, job_uuid).cancel_requested_at is None
    assert ctx.jobs.canceled == []
    engine.on_agent_reply(reply, ok({"value": 1}))
    assert get_job(ctx, job_uuid).execution == "succeeded"


def test_an_agent_step_the_onerror_chain_cannot_undo_ends_at_its_reply(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid, reply = waiting_for_agent(ctx, engine, transport, "c-wait")
    cancel(ctx, job_uuid)
    assert engine.cancel(job_uuid) is False  # not now: the reply is the boundary
    assert engine.sweep() == 0
    waiting = get_job(ctx, job_uuid)
    assert waiting.execution == "running" and waiting.chain_results[-1]["error"] is None
    engine.on_agent_reply(reply, ok({"value": 3}))
    job = get_job(ctx, job_uuid)
    assert job.execution == "canceled"
    assert job.chain_results[-1]["result"] == {"got": 3}
    assert calls(job_uuid) == ["on_result", "forget"]
    assert job.error is not None and job.error["step"] == "after"


def test_a_pending_retry_is_not_run(ctx: Any, engine: Engine,
                                    transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "c-retry")
    engine.run_step(job_uuid, 1)
    assert len(transport.steps) == 1  # the retry waits in the queue
    cancel(ctx, job_uuid)
    engine.cancel(job_uuid)
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "canceled"
    assert calls(job_uuid) == ["flaky", "forget"]
    assert job.error is not None and job.error["step"] == "flaky"


def test_a_lost_cancel_message_is_acted_on_by_the_sweep(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid, reply = waiting_for_agent(ctx, engine, transport)
    cancel(ctx, job_uuid)  # its message never arrives
    assert engine.sweep() == 1
    assert get_job(ctx, job_uuid).execution == "canceled"
    assert engine.sweep() == 0


def test_a_cancel_does_not_stop_a_clean_up(ctx: Any, engine: Engine,
                                           transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "c-failing")
    engine.run_step(job_uuid, 1)
    job = get_job(ctx, job_uuid)
    assert (job.execution, job.phase) == ("running", "onerror")  # a clean-up retry waits
    answer = cancel(ctx, job_uuid)
    assert answer["execution"] == "running" and answer["cancel_requested_at"] is not None
    assert engine.cancel(job_uuid) is False
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    # it failed before anyone asked: it stays failed, with its own error
    assert job.execution == "failed" and job.error is not None
    assert job.error["code"] == "Boom"
    assert calls(job_uuid) == ["boom", "slow-clean", "slow-clean", "forget"]


def test_cancelling_twice_keeps_the_first_request(ctx: Any, engine: Engine,
                                                  transport: RecordingTransport) -> None:
    job_uuid, _ = waiting_for_agent(ctx, engine, transport)
    first = cancel(ctx, job_uuid)
    second = cancel(ctx, job_uuid, {"type": "operator", "login": "ops-bob"})
    assert second["cancel_requested_at"] == first["cancel_requested_at"]
    assert second["canceled_by"] == CALLER
    assert ctx.jobs.canceled == [job_uuid, job_uuid]
    assert [engine.cancel(job_uuid), engine.cancel(job_uuid)] == [True, False]
    assert calls(job_uuid) == ["prepare", "undo_on_node", "forget"]


@pytest.mark.parametrize("ending", ["succeeded", "failed", "canceled"])
def test_an_ended_job_cannot_be_canceled(ctx: Any, engine: Engine,
                                         transport: RecordingTransport, ending: str) -> None:
    job_uuid, reply = waiting_for_agent(ctx, engine, transport, "c-wait")
    if ending == "canceled":
        cancel(ctx, job_uuid)
        engine.on_agent_reply(reply, ok({"value": 1}))
    else:
        engine.on_agent_reply(reply, ok({"value": 1}) if ending == "succeeded" else
                              {**ok(), "ok": False, "error": {"code": "X", "message": "no"}})
    before = get_job(ctx, job_uuid)
    assert before.execution == ending
    with pytest.raises(Conflict) as err:
        cancel(ctx, job_uuid, {"type": "operator", "login": "late"})
    assert err.value.status == 409 and err.value.code == "JobFinished"
    assert ending in err.value.message and job_uuid in err.value.message
    after = get_job(ctx, job_uuid)
    assert (after.cancel_requested_at, after.canceled_by) == (before.cancel_requested_at,
                                                              before.canceled_by)


def test_an_unknown_job_is_not_found(ctx: Any) -> None:
    with pytest.raises(NotFound):
        cancel(ctx, "00000000-0000-4000-8000-000000000000")
    assert ctx.jobs.canceled == []


def test_listing_by_canceled_execution(ctx: Any, engine: Engine) -> None:
    job_uuid = start(ctx, "c-plain")
    start(ctx, "c-plain")
    cancel(ctx, job_uuid)
    engine.cancel(job_uuid)
    listed = job_service.list_jobs(ctx, execution="canceled")
    assert [j["uuid"] for j in listed] == [job_uuid]
