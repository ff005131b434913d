"""What the engine gives migrations: an agent step sent to a server of its own (a signed
reply counts only from that server) and a step that runs only when its condition holds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.unit.workflows.conftest import RecordingTransport, get_job, ok, pump
from workflows.engine import Engine, Step, StepContext, Workflow, new_job, register

JOB_SERVER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"


def other_server(ctx: StepContext) -> str:
    return str(ctx.job.params["other"])


def params(ctx: StepContext) -> dict[str, Any]:
    return {"job": ctx.job.uuid}


def wanted(ctx: StepContext) -> bool:
    return bool(ctx.job.params.get("wanted"))


register(Workflow("t-two-servers", chain=(
    Step("there", 10, agent_op="probe", params=params, server=other_server),
    Step("here", 10, agent_op="probe", params=params),
)))
register(Workflow("t-once", chain=(
    Step("stream", 300, agent_op="probe", params=params, resend=False),
)))
register(Workflow("t-maybe", chain=(
    Step("maybe", 10, agent_op="probe", params=params, when=wanted),
    Step("always", 10, run=lambda ctx: {"ran": True}),
)))


def start(ctx: Any, name: str, **job_params: Any) -> str:
    with ctx.transaction() as session:
        job = new_job(session, name, machine_uuid=None, server_uuid=JOB_SERVER,
                      owner_uuid=None, params=job_params)
        session.flush()
        return job.uuid


def test_a_step_goes_to_its_own_server_and_only_its_reply_counts(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-two-servers", other=OTHER)
    engine.run_step(job_uuid, 1)
    server, op, _, reply = transport.agent.popleft()
    assert (server, op) == (OTHER, "probe")
    assert get_job(ctx, job_uuid).chain_results[0]["server"] == OTHER

    # the job's own server cannot answer for the other one
    engine.on_agent_reply(reply, ok({}, JOB_SERVER), from_server=JOB_SERVER)
    pump(engine, transport)
    assert not transport.agent and get_job(ctx, job_uuid).chain_results[0]["finished_at"] is None

    engine.on_agent_reply(reply, ok({}, OTHER), from_server=OTHER)
    server, _, _, reply = transport.agent.popleft()
    assert server == JOB_SERVER
    engine.on_agent_reply(reply, ok({}, OTHER), from_server=OTHER)  # not its server now
    assert get_job(ctx, job_uuid).execution == "running"
    engine.on_agent_reply(reply, ok({}, JOB_SERVER), from_server=JOB_SERVER)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded"
    assert [e["server"] for e in job.chain_results] == [OTHER, JOB_SERVER]


@pytest.mark.parametrize("want", [True, False])
def test_a_step_with_a_condition_runs_or_is_skipped(
        ctx: Any, engine: Engine, transport: RecordingTransport, want: bool) -> None:
    job_uuid = start(ctx, "t-maybe", wanted=want)
    engine.run_step(job_uuid, 1)
    if want:
        *_, reply = transport.agent.popleft()
        engine.on_agent_reply(reply, ok({"did": 1}))
    pump(engine, transport)
    job = get_job(ctx, job_uuid)
    assert job.execution == "succeeded" and not transport.agent
    assert [e["result"] for e in job.chain_results] == [
        {"did": 1} if want else {"skipped": True}, {"ran": True}]


def test_a_joined_step_cannot_choose_its_server_or_be_skipped() -> None:
    with pytest.raises(ValueError):
        Step("x", 1, agent_op="probe", joins_previous=True, server=other_server)
    with pytest.raises(ValueError):
        Workflow("t-bad", chain=(Step("a", 1, agent_op="p", when=wanted),
                                 Step("b", 1, agent_op="q", joins_previous=True)))
    with pytest.raises(ValueError):
        Workflow("t-dup", chain=(Step("a", 1, agent_op="p"), Step("a", 1, agent_op="q")))


def test_a_step_that_must_not_be_asked_twice_waits_its_whole_timeout(
        ctx: Any, engine: Engine, transport: RecordingTransport) -> None:
    job_uuid = start(ctx, "t-once")
    engine.run_step(job_uuid, 1)
    transport.agent.popleft()
    # past the resend interval, not past the step's timeout: nothing is sent again
    assert engine.sweep(now=time.time() + ctx.settings.resend_interval + 1) == 0
    assert not transport.agent
    assert engine.sweep(now=time.time() + 301) == 1
    job = get_job(ctx, job_uuid)
    assert not transport.agent and job.execution == "failed"
    assert job.chain_results[0]["error"]["code"] == "StepTimeout"
