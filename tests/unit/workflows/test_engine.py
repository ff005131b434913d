"""The job engine on the real PostgreSQL with test-only workflows and a recording transport."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from headnode.store.models import Job, Machine
from tests.unit.workflows.conftest import (
    RecordingTransport,
    add,
    batch,
    failed,
    get_job,
    get_machine,
    ok,
    pump,
)
from workflows.engine import Engine, Step, StepContext, StepFailed, Workflow, new_job, register

#: (job uuid, step name) of every local step run, in order
CALLS: list[tuple[str, str]] = []
SERVER = "11111111-1111-4111-8111-111111111111"


def local(name: str, result: dict[str, Any] | None = None,
          raises: Exception | None = None) -> Callable[[StepContext], dict[str, Any] | None]:
    def run(ctx: StepContext) -> dict[str, Any] | None:
        CALLS.append((ctx.job.uuid, name))
        if raises is not None:
            raise raises
        return result
    return run


def fails_first_time(ctx: StepContext) -> dict[str, Any]:
    CALLS.append((ctx.job.uuid, "flaky-once"))
    if sum(1 for job, _ in CALLS if job == ctx.job.uuid) == 1:
        raise StepFailed("Flaky", "first time")
    return {"second": True}


def rename_then_fail(ctx: StepContext) -> None:
    CALLS.append((ctx.job.uuid, "rename"))
    ctx.machine().alias = "renamed"
    ctx.session.flush()
    raise StepFailed("Nope", "changed my mind")


def probe_params(ctx: StepContext) -> dict[str, Any]:
    return {"job": ctx.job.uuid}


def probe_result(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    CALLS.append((ctx.job.uuid, "on_result"))
    if result.get("bad"):
        ctx.machine().alias = "from-a-bad-reply"
        ctx.session.flush()
        raise StepFailed("BadReply", "the agent said something odd")
    return {"got": result["value"]}


def broken_params(ctx: StepContext) -> dict[str, Any]:
    raise StepFailed("NoParams", "cannot build them")


register(Workflow("t-seq", chain=(
    Step("one", 10, run=local("one", {"n": 1})),
    Step("remote", 10, agent_op="probe", params=probe_params, on_result=probe_result),
    Step("three", 10, run=local("three")),
)))
register(Workflow("t-fail", chain=(
    Step("one", 10, run=local("one", {"n": 1})),
    Step("boom", 10, run=local("boom", raises=StepFailed("Boom", "bad"))),
    Step("never", 10, run=local("never")),
), onerror=(
    Step("clean1", 10, run=local("clean1", raises=RuntimeError("oops"))),
    Step("clean2", 10, run=local("clean2", {"cleaned": True})),
)))
register(Workflow("t-nocleanup", chain=(
    Step("boom", 10, run=local("boom", raises=StepFailed("Boom", "bad"))),
)))
register(Workflow("t-retry", chain=(
    Step("flaky", 10, run=local("flaky", raises=StepFailed("Flaky", "again")), retries=1),
)))
register(Workflow("t-retry-ok", chain=(
    Step("flaky-once", 10, run=fails_first_time, retries=1),
)))
register(Workflow("t-readonly", chain=(
    Step("look", 10, run=local("look", {"seen": True}), savepoint=False),
    Step("refuse", 10, run=local("refuse", raises=StepFailed("No", "not today")),
         savepoint=False),
)))
def broken_sql(ctx: StepContext) -> None:
    CALLS.append((ctx.job.uuid, "broken-sql"))
    ctx.session.execute(text("UPDATE jobs SET no_such_column = 1"))


register(Workflow("t-dberror", chain=(
    Step("broken-sql", 10, run=broken_sql, savepoint=False, retries=2),
)))
register(Workflow("t-rollback", chain=(Step("rename", 10, run=rename_then_fail),)))
register(Workflow("t-agent", chain=(
    Step("remote", 5, agent_op="probe", params=probe_params, on_result=probe_result,
         retries=1),
    Step("after", 10, run=local("after")),
), onerror=(Step("undo", 10, run=local("undo")),)))
register(Workflow("t-patient", chain=(
    Step("remote", 300, agent_op="probe", params=probe_params, on_result=probe_result),
)))
register(Workflow("t-slowjob", chain=(
    Step("remote", 10_000, agent_op="probe", params=probe_params),
), timeout=60))
register(Workflow("t-batch", chain=(
    Step("first", 20, agent_op="probe", params=probe_params, retries=1),
    Step("second", 30, agent_op="probe2", params=probe_params, on_result=probe_result,
         retries=1, joins_previous=True),
    Step("after", 10, run=local("after")),
)))
register(Workflow("t-badparams", chain=(
    Step("remote", 5, agent_op="probe", params=broken_params),
)))


def start(ctx: Any, name: str, machine_uuid: str | None = None,
          server_uuid: str | None = SERVER) -> str:
    with ctx.transaction() as session:
        job = new_job(session, name, machine_uuid=machine_uuid, server_uuid=server_uuid,
                      owner_uuid=None)
        session.flush()
        if machine_uuid:
            machine = session.get(Machine, machine_uuid)
            assert machine is not None
            machine.job_uuid = job.uuid
        return job.uuid


def calls(job_uuid: str) -> list[str]:
    return [name for job, name in CALLS if job == job_uuid]


def snapshot(ctx: Any, job_uuid: str) -> tuple[Any, ...]:
    job = get_job(ctx, job_uuid)
    return (job.execution, job.phase, job.step_index, job.attempt, job.step_deadline,
            job.chain_results, job.onerror_results, job.error)


@pytest.fixture
def machine(ctx: Any, fleet: dict[str, Any]) -> Machine:
    return add(ctx, Machine(alias="web", owner_uuid=fleet["owner"].uuid,
                            package_uuid=fleet["package"].uuid,
                            image_uuid=fleet["image"].uuid, server_uuid=fleet["server"].uuid,
                            state="running", ram_mb=1024, disk_mb=10240))


def test_new_job_is_queued_with_its_step_names(ctx: Any) -> None:
    job = get_job(ctx, start(ctx, "t-fail"))
    assert (job.execution, job.phase, job.step_index, job.attempt) == ("queued", "chain", 0, 1)
    assert job.params["chain"] == ["one", "boom", "never"]
    assert job.params["onerror"] == ["clean1", "clean2"]
    assert job.step_deadline is not None and job.step_deadline > time.time()


def test_steps_run_in_order_and_record_results(ctx: Any, engine: Engine,
                                              transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-seq")
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    # waiting for the agent now
    job = get_job(ctx, job_uuid)
    assert job.execution == "running" and job.started_at is not None
    assert [e["name"] for e in job.chain_results] == ["one", "remote"]
    assert job.chain_results[1]["finished_at"] is None
    assert len(transport.agent) == 1
    server, op, params, reply = transport.agent.popleft()
    assert (server, op, params) == (SERVER, "probe", {"job": job_uuid})
    assert reply == {"job_uuid": job_uuid, "step": 1, "attempt": job.attempt}

    engine.on_agent_reply(reply, ok({"value": 7}))
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded" and job.error is None
    assert job.finished_at is not None and job.step_deadline is None
    assert calls(job_uuid) == ["one", "on_result", "three"]
    assert [e["name"] for e in job.chain_results] == ["one", "remote", "three"]
    assert [e["result"] for e in job.chain_results] == [{"n": 1}, {"got": 7}, "OK"]
    assert all(e["started_at"] and e["finished_at"] and e["error"] is None
               for e in job.chain_results)
    assert all(e["started_at"] <= e["finished_at"] for e in job.chain_results)
    attempts = [e["attempt"] for e in job.chain_results]
    assert attempts == sorted(attempts) and len(set(attempts)) == 3
    assert job.onerror_results == []
    assert transport.kinds().count("agent") == 1


def test_failing_step_runs_onerror_then_fails(ctx: Any, engine: Engine,
                                              transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-fail")
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed" and job.phase == "onerror"
    assert calls(job_uuid) == ["one", "boom", "clean1", "clean2"]
    assert [e["name"] for e in job.chain_results] == ["one", "boom"]
    assert job.chain_results[1]["error"] == {"code": "Boom", "message": "bad"}
    assert job.chain_results[1]["finished_at"] is not None
    assert job.error == {"step": "boom", "code": "Boom", "message": "bad"}
    # the first clean-up step raised, the second still ran
    clean1, clean2 = job.onerror_results
    assert clean1["name"] == "clean1" and clean1["error"]["code"] == "InternalError"
    assert "RuntimeError: oops" in clean1["error"]["message"]
    assert clean2["name"] == "clean2" and clean2["result"] == {"cleaned": True}
    assert clean2["error"] is None
    assert job.finished_at is not None and job.step_deadline is None


def test_failure_without_onerror_fails_at_once(ctx: Any, engine: Engine,
                                               transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-nocleanup")
    engine.run_step(job_uuid, 1)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed" and job.phase == "chain"
    assert job.error == {"step": "boom", "code": "Boom", "message": "bad"}
    assert transport.sent == []


def test_retries_run_the_step_again(ctx: Any, engine: Engine,
                                    transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-retry")
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert calls(job_uuid) == ["flaky", "flaky"]
    assert job.execution == "failed"
    assert [(e["name"], e["attempt"], e["error"]["code"]) for e in job.chain_results] == [
        ("flaky", 1, "Flaky"), ("flaky", 2, "Flaky")]


def test_a_retry_can_succeed(ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-retry-ok")
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded" and job.error is None
    assert [e["error"] and e["error"]["code"] for e in job.chain_results] == ["Flaky", None]
    assert job.chain_results[1]["result"] == {"second": True}


def test_a_failed_step_is_rolled_back(ctx: Any, engine: Engine, transport: RecordingTransport,
                                      machine: Machine) -> None:
    job_uuid = start(ctx, "t-rollback", machine_uuid=machine.uuid)
    engine.run_step(job_uuid, 1)
    assert get_machine(ctx, machine.uuid).alias == "web"
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed" and job.chain_results[0]["error"]["code"] == "Nope"


def test_stale_step_messages_change_nothing(ctx: Any, engine: Engine,
                                            transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-seq")
    engine.run_step(job_uuid, 1)
    pump(engine, transport)  # now waiting for the agent
    before = snapshot(ctx, job_uuid)
    current = before[3]
    sent = list(transport.sent)
    for attempt in (0, current - 1, current + 1, 99):
        engine.run_step(job_uuid, attempt)
    engine.run_step("00000000-0000-4000-8000-00000000dead", 1)
    assert snapshot(ctx, job_uuid) == before
    assert transport.sent == sent
    assert calls(job_uuid) == ["one"]


def test_messages_for_a_finished_job_are_ignored(ctx: Any, engine: Engine,
                                                 transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-nocleanup")
    engine.run_step(job_uuid, 1)
    before = snapshot(ctx, job_uuid)
    engine.run_step(job_uuid, get_job(ctx, job_uuid).attempt)
    engine.on_agent_reply({"job_uuid": job_uuid, "step": 0, "attempt": 1}, ok())
    assert snapshot(ctx, job_uuid) == before
    assert calls(job_uuid) == ["boom"] and transport.sent == []


def test_duplicate_message_for_a_running_agent_step_is_ignored(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    # a redelivered run_step (acks_late after a worker crash past the commit) names the
    # current attempt; the agent was already called for it
    job_uuid = start(ctx, "t-agent")
    engine.run_step(job_uuid, 1)
    before = snapshot(ctx, job_uuid)
    engine.run_step(job_uuid, 1)
    assert snapshot(ctx, job_uuid) == before
    assert transport.kinds() == ["agent"]


def test_stale_agent_replies_are_ignored(ctx: Any, engine: Engine,
                                         transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-seq")
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    *_, reply = transport.agent.popleft()
    before = snapshot(ctx, job_uuid)
    for stale in ({**reply, "attempt": reply["attempt"] - 1},
                  {**reply, "attempt": reply["attempt"] + 1},
                  {**reply, "step": reply["step"] + 1},
                  {**reply, "job_uuid": "00000000-0000-4000-8000-00000000dead"}):
        engine.on_agent_reply(stale, ok({"value": 1}))
        engine.on_agent_reply(stale, failed())
    assert snapshot(ctx, job_uuid) == before
    assert "on_result" not in calls(job_uuid)
    engine.on_agent_reply(reply, ok({"value": 2}))
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded" and job.chain_results[1]["result"] == {"got": 2}
    # the same reply again, now late
    after = snapshot(ctx, job_uuid)
    engine.on_agent_reply(reply, ok({"value": 3}))
    assert snapshot(ctx, job_uuid) == after


def test_agent_failure_retries_then_runs_onerror(ctx: Any, engine: Engine,
                                                 transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-agent")
    engine.run_step(job_uuid, 1)
    *_, first = transport.agent.popleft()
    engine.on_agent_reply(first, failed("Disk", "pool full"))
    pump(engine, transport)
    *_, second = transport.agent.popleft()
    assert second["attempt"] > first["attempt"] and second["step"] == first["step"]
    # the first call's late answer is stale now
    engine.on_agent_reply(first, ok({"value": 1}))
    assert get_job(ctx, job_uuid).chain_results[-1]["finished_at"] is None
    engine.on_agent_reply(second, failed("Disk", "still full"))
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed"
    assert [e["error"] for e in job.chain_results] == [
        {"code": "Disk", "message": "pool full"}, {"code": "Disk", "message": "still full"}]
    assert job.error == {"step": "remote", "code": "Disk", "message": "still full"}
    assert calls(job_uuid) == ["undo"]


def test_on_result_raising_fails_the_step_and_rolls_back(
        ctx: Any, engine: Engine, transport: RecordingTransport, machine: Machine) -> None:
    job_uuid = start(ctx, "t-seq", machine_uuid=machine.uuid)
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    *_, reply = transport.agent.popleft()
    engine.on_agent_reply(reply, ok({"bad": True}))
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed"
    assert job.chain_results[1]["error"]["code"] == "BadReply"
    assert get_machine(ctx, machine.uuid).alias == "web"


def test_agent_step_params_failing_or_no_server(ctx: Any, engine: Engine,
                                                transport: RecordingTransport) -> None:
    broken = start(ctx, "t-badparams")
    engine.run_step(broken, 1)
    job = get_job(ctx, broken)
    assert job.execution == "failed" and (job.error or {}).get("code") == "NoParams"
    nowhere = start(ctx, "t-agent", server_uuid=None)
    engine.run_step(nowhere, 1)
    pump(engine, transport)
    job = get_job(ctx, nowhere)
    assert [e["error"]["code"] for e in job.chain_results] == ["NoServer", "NoServer"]
    assert job.execution == "failed" and calls(nowhere) == ["undo"]
    assert transport.agent == type(transport.agent)()  # nothing reached an agent


def test_sweep_times_out_an_agent_step_and_retries(ctx: Any, engine: Engine,
                                                   transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-agent")
    engine.run_step(job_uuid, 1)
    transport.agent.clear()  # the agent never answers
    assert engine.sweep() == 0  # not due yet
    before = snapshot(ctx, job_uuid)
    assert engine.sweep(now=time.time() + 1000) == 1
    job = get_job(ctx, job_uuid)
    assert job.chain_results[0]["error"]["code"] == "StepTimeout"
    assert job.execution == "running" and job.attempt == before[3] + 1
    pump(engine, transport)  # the retry calls the agent again
    *_, reply = transport.agent.popleft()
    assert reply["attempt"] == job.attempt
    assert engine.sweep(now=time.time() + 1000) == 1
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed"
    assert [e["error"]["code"] for e in job.chain_results] == ["StepTimeout", "StepTimeout"]
    assert job.error is not None and job.error["code"] == "StepTimeout"
    assert calls(job_uuid) == ["undo"]
    # the late reply of the timed-out call changes nothing
    after = snapshot(ctx, job_uuid)
    engine.on_agent_reply(reply, ok({"value": 1}))
    assert snapshot(ctx, job_uuid) == after
    assert engine.sweep(now=time.time() + 5000) == 0


def test_sweep_asks_an_unanswering_agent_again_before_the_deadline(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-patient")
    engine.run_step(job_uuid, 1)
    first = transport.agent.popleft()  # this call or its answer is lost
    resend_at = time.time() + ctx.settings.resend_interval + 1
    assert engine.sweep(now=resend_at) == 1
    server, op, params, reply = transport.agent.popleft()
    assert (server, op, params, reply) == first  # the same call, for the same attempt
    job = get_job(ctx, job_uuid)
    assert job.chain_results[0]["resends"] == 1 and job.chain_results[0]["error"] is None
    engine.on_agent_reply(reply, ok({"value": 1}))
    engine.on_agent_reply(reply, ok({"value": 2}))  # the first call answers late: stale
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded"
    assert job.chain_results[0]["result"] == {"got": 1}


def test_sweep_resends_a_lost_first_message(ctx: Any, engine: Engine,
                                            transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-seq")  # its enqueue never reached the broker
    assert engine.sweep() == 0 and transport.sent == []
    now = time.time() + 1000
    assert engine.sweep(now=now) == 1
    assert transport.sent == [("step", job_uuid, 1)]
    job = get_job(ctx, job_uuid)
    assert job.execution == "queued" and job.chain_results == []
    assert job.step_deadline is not None and job.step_deadline > now
    assert engine.sweep(now=now) == 0  # its new deadline has not passed
    pump(engine, transport)
    assert calls(job_uuid) == ["one"]
    assert get_job(ctx, job_uuid).chain_results[0]["result"] == {"n": 1}


def test_sweep_resends_a_lost_step_message(ctx: Any, engine: Engine,
                                           transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-retry-ok")
    engine.run_step(job_uuid, 1)  # fails once; its retry goes through the queue
    assert transport.steps, "a retry is a message"
    lost = transport.steps.popleft()  # ... and that message is dropped
    assert get_job(ctx, job_uuid).attempt == lost[1]
    assert engine.sweep() == 0
    assert engine.sweep(now=time.time() + 1000) == 1
    assert list(transport.steps) == [lost]  # the same attempt again
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded"
    assert calls(job_uuid) == ["flaky-once", "flaky-once"]


@pytest.mark.parametrize("workflow", ["t-seq", "t-fail"])
def test_machine_lock_released_when_the_job_ends(ctx: Any, engine: Engine,
                                                 transport: RecordingTransport,
                                                 machine: Machine, workflow: str) -> None:
    job_uuid = start(ctx, workflow, machine_uuid=machine.uuid)
    engine.run_step(job_uuid, 1)
    pump(engine, transport)
    if transport.agent:
        assert get_machine(ctx, machine.uuid).job_uuid == job_uuid  # held while it runs
        *_, reply = transport.agent.popleft()
        engine.on_agent_reply(reply, ok({"value": 1}))
        pump(engine, transport)
    assert get_job(ctx, job_uuid).execution in ("succeeded", "failed")
    assert get_machine(ctx, machine.uuid).job_uuid is None


def test_lock_of_another_job_is_kept(ctx: Any, engine: Engine, transport: RecordingTransport,
                                     machine: Machine) -> None:
    job_uuid = start(ctx, "t-nocleanup", machine_uuid=machine.uuid)
    with ctx.transaction() as session:
        session.get(Machine, machine.uuid).job_uuid = "someone-else"  # type: ignore[union-attr]
    engine.run_step(job_uuid, 1)
    assert get_job(ctx, job_uuid).execution == "failed"
    assert get_machine(ctx, machine.uuid).job_uuid == "someone-else"


def test_messages_are_sent_only_after_the_commit(ctx: Any, engine: Engine) -> None:
    """Every message names state that a session of its own already sees committed."""
    seen: list[tuple[Any, ...]] = []

    class Watching(RecordingTransport):
        def _committed(self, job_uuid: str) -> Job:
            with self.sessions() as session:
                job = session.get(Job, job_uuid)
                assert job is not None
                return job

        def send_step(self, job_uuid: str, attempt: int) -> None:
            job = self._committed(job_uuid)
            entries = job.chain_results if job.phase == "chain" else job.onerror_results
            # the step is due at this attempt and has not started yet
            seen.append(("step", attempt == job.attempt,
                         all(e["attempt"] < attempt for e in entries)))
            super().send_step(job_uuid, attempt)

        def send_agent(self, server_uuid: str, op: str, params: dict[str, Any],
                       reply: dict[str, Any] | None) -> None:
            assert reply is not None
            job = self._committed(reply["job_uuid"])
            entries = job.chain_results if job.phase == "chain" else job.onerror_results
            # the step has started at this attempt and is waiting
            seen.append(("agent", reply["attempt"] == job.attempt,
                         entries[-1]["attempt"] == reply["attempt"]
                         and entries[-1]["finished_at"] is None))
            super().send_agent(server_uuid, op, params, reply)

    watching = Watching(ctx.sessions)
    engine = Engine(ctx.settings, ctx.sessions, watching)
    job_uuid = start(ctx, "t-agent")
    engine.run_step(job_uuid, 1)
    *_, reply = watching.agent.popleft()
    engine.on_agent_reply(reply, failed())  # a retry: through the queue
    pump(engine, watching)
    *_, reply = watching.agent.popleft()
    engine.on_agent_reply(reply, ok({"value": 5}))
    pump(engine, watching)
    assert get_job(ctx, job_uuid).execution == "succeeded"
    assert ("step", True, True) in seen and seen.count(("agent", True, True)) == 2
    assert all(ok_attempt and ok_entries for _, ok_attempt, ok_entries in seen), seen


def test_sweep_fails_a_job_past_its_workflow_timeout(ctx: Any, engine: Engine,
                                                     transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-slowjob")
    engine.run_step(job_uuid, 1)  # its one step may take far longer than the whole job
    engine.sweep(now=time.time() + 600)
    pump(engine, transport)
    assert get_job(ctx, job_uuid).execution == "failed"


def test_joined_agent_steps_travel_in_one_message_and_reply(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-batch")
    before = time.time()
    engine.run_step(job_uuid, 1)
    server, op, params, reply = transport.agent.popleft()
    assert (server, op, reply["batch"], reply["step"]) == (SERVER, "batch", 2, 0)
    assert params == {"ops": [{"op": "probe", "params": {"job": job_uuid}},
                              {"op": "probe2", "params": {"job": job_uuid}}]}
    job = get_job(ctx, job_uuid)
    # the message may take as long as both steps together
    assert job.chain_results[0]["deadline"] >= before + 50
    first = ok({"value": 1})
    first["finished_at"] = before - 2  # node time: the first step ended before the second
    second = ok({"value": 2})
    second["started_at"] = before - 1
    engine.on_agent_reply(reply, batch(first, second))
    engine.on_agent_reply(reply, batch(first, second))  # a duplicate: stale
    pump(engine, transport)
    assert not transport.agent
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded", job.chain_results
    assert [e["name"] for e in job.chain_results] == ["first", "second", "after"]
    assert job.chain_results[0]["result"] == {"value": 1}
    assert job.chain_results[1]["result"] == {"got": 2}
    one, two = job.chain_results[:2]
    assert one["finished_at"] < two["started_at"] < two["finished_at"]
    assert calls(job_uuid) == ["on_result", "after"]


def test_a_failure_inside_a_batch_retries_from_the_step_that_failed(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-batch")
    engine.run_step(job_uuid, 1)
    *_, reply = transport.agent.popleft()
    engine.on_agent_reply(reply, batch(ok({"value": 1}), failed("Disk", "pool full")))
    pump(engine, transport)
    _, op, params, reply = transport.agent.popleft()  # only the failed step, alone
    assert (op, params, reply.get("batch")) == ("probe2", {"job": job_uuid}, None)
    engine.on_agent_reply(reply, ok({"value": 3}))
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded"
    assert [(e["name"], e["error"]) for e in job.chain_results] == [
        ("first", None), ("second", {"code": "Disk", "message": "pool full"}),
        ("second", None), ("after", None)]


def test_a_batch_refused_as_a_whole_fails_its_first_step(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-batch")
    engine.run_step(job_uuid, 1)
    for _ in range(2):  # retries=1: the whole batch again
        _, op, _, reply = transport.agent.popleft()
        assert op == "batch"
        engine.on_agent_reply(reply, failed("InvalidParams", "batch: bad"))
        pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed"
    assert job.error == {"step": "first", "code": "InvalidParams", "message": "batch: bad"}


def test_a_resent_batch_keeps_its_deadline(ctx: Any, engine: Engine,
                                           transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-batch")
    engine.run_step(job_uuid, 1)
    first = transport.agent.popleft()
    deadline = get_job(ctx, job_uuid).chain_results[0]["deadline"]
    assert engine.sweep(now=time.time() + ctx.settings.resend_interval + 1) == 1
    assert transport.agent.popleft() == first
    assert get_job(ctx, job_uuid).chain_results[0]["deadline"] == deadline


def test_steps_that_only_read_run_and_fail_without_a_savepoint(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-readonly")
    engine.run_step(job_uuid, 1)
    job = get_job(ctx, job_uuid)
    assert job.execution == "failed"
    assert [(e["name"], e["result"]) for e in job.chain_results] == [
        ("look", {"seen": True}), ("refuse", None)]
    assert job.error == {"step": "refuse", "code": "No", "message": "not today"}


def test_a_database_error_in_a_step_without_savepoint_rolls_the_whole_turn_back(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-dberror")
    before = snapshot(ctx, job_uuid)
    with pytest.raises(DBAPIError):
        engine.run_step(job_uuid, 1)
    assert snapshot(ctx, job_uuid) == before  # nothing of the turn was kept
    assert transport.sent == []
    assert engine.sweep(now=time.time() + 1000) == 1  # ... and the sweep asks again
    assert transport.sent == [("step", job_uuid, 1)]
