"""Running steps within a turn: start the job's current step (local, or sent to an agent),
apply an agent's outcome, record success or failure, and move to the next step, to the
onerror chain, or to the job's end."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from headnode.config import HeadnodeSettings
from headnode.store.models import Job, utcnow
from workflows.cancel import CANCELED, CANCELED_CODE, cancel_due, record_cancel
from workflows.definition import (
    Step,
    StepContext,
    describe,
    job_machine,
    log,
    phase_steps,
    savepoint,
    workflow_of,
)
from workflows.turn import Turn, iso, now_iso


def start(turn: Turn) -> None:
    step = turn.step()
    entry = turn.start_entry(step)
    if step.when is not None and not _wanted(turn, step, entry):
        return
    if step.is_agent and step.joins_previous and turn.ready:
        # The node already ran this step, in the message of the step before it.
        outcome = turn.ready.popleft()
        if outcome.get("started_at"):
            entry["started_at"] = iso(outcome["started_at"])
        apply_outcome(turn, step, entry, outcome)
    elif step.is_agent:
        dispatch_agent(turn, step)
    else:
        _run_local(turn, step, entry)


def _wanted(turn: Turn, step: Step, entry: dict[str, Any]) -> bool:
    """Whether a step with a condition runs; one that does not is recorded as skipped."""
    assert step.when is not None
    turn.ready.clear()  # a conditional step never rides in a batch
    ctx = turn.context()
    try:
        wanted = step.when(ctx)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
        fail_step(turn, step, entry, *describe(exc))
        return False
    if not wanted:
        _succeed_step(turn, entry, {"skipped": True}, ctx)
    return wanted


def apply_reply(turn: Turn, reply: dict[str, Any], outcome: dict[str, Any]) -> None:
    """The node's answer to the agent step (or batch) the job waits for."""
    step = turn.step()
    if not step.is_agent or turn.job.step_index != reply["step"]:
        return
    if reply.get("batch") and outcome.get("ok"):
        # One outcome per step the batch carried, up to the first that failed.
        turn.ready.extend((outcome.get("result") or {}).get("outcomes") or [])
    first = turn.ready.popleft() if turn.ready else outcome
    apply_outcome(turn, step, turn.entry(), first)


def apply_outcome(turn: Turn, step: Step, entry: dict[str, Any],
                  outcome: dict[str, Any]) -> None:
    """Finish an agent step with what the node answered."""
    if not outcome.get("ok"):
        error = outcome.get("error") or {}
        fail_step(turn, step, entry, error.get("code", "AgentError"), error.get("message", ""))
        return
    ctx = turn.context()
    result = outcome.get("result")
    if step.on_result is not None:
        try:
            with savepoint(turn.session, step):
                result = step.on_result(ctx, result or {})
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
            fail_step(turn, step, entry, *describe(exc))
            return
    # A step whose outcome came in a batch with later steps ended when the node says,
    # not when the reply for the whole batch arrived.
    ended = iso(outcome["finished_at"]) if turn.ready and outcome.get("finished_at") else None
    _succeed_step(turn, entry, result, ctx)
    if ended:
        entry["finished_at"] = ended


def dispatch_agent(turn: Turn, step: Step) -> None:
    """Send the agent step (with the steps that join it) after the commit; the turn ends."""
    job = turn.job
    ctx = turn.context()
    batch = turn.batch()
    try:
        # No savepoint: building a payload only reads.
        ops: list[tuple[str, dict[str, Any]]] = [
            (s.agent_op or "", s.params(ctx) if s.params else {}) for s in batch]
    except Exception as exc:  # noqa: BLE001
        fail_step(turn, step, turn.entry(), *describe(exc))
        return
    try:
        server_uuid = step.server(ctx) if step.server is not None else job.server_uuid
    except Exception as exc:  # noqa: BLE001
        fail_step(turn, step, turn.entry(), *describe(exc))
        return
    if server_uuid is None:
        fail_step(turn, step, turn.entry(), "NoServer",
                  "the job has no server to send the step to")
        return
    # the reply must come from the server the step went to (Engine.on_agent_reply)
    turn.entry()["server"] = server_uuid
    turn.touch()
    reply: dict[str, Any] = {"job_uuid": job.uuid, "step": job.step_index,
                             "attempt": job.attempt}
    op, params = ops[0]
    if len(ops) > 1:
        op, params = "batch", {"ops": [{"op": o, "params": p} for o, p in ops]}
        reply["batch"] = len(ops)
    # Wake the sweep before the real deadline, to ask again if no answer came by then.
    job.step_deadline = (min(turn.entry()["deadline"],
                             time.time() + turn.settings.resend_interval)
                         if step.resend else turn.entry()["deadline"])
    turn.send_agent_after(server_uuid, op, params, reply)


def _run_local(turn: Turn, step: Step, entry: dict[str, Any]) -> None:
    # A batch's outcomes belong to the agent steps right after it: a local step ends them.
    turn.ready.clear()
    if step.own_turn:
        # Its start (the entry) commits now; it runs after that, without the job's lock.
        turn.detached = step
        return
    ctx = turn.context()
    assert step.run is not None
    try:
        with savepoint(turn.session, step):
            result = step.run(ctx)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
        fail_step(turn, step, entry, *describe(exc))
        return
    _succeed_step(turn, entry, result, ctx)


#: what an own-turn step's function came to: its result, or (code, message), and the
#: fire-and-forget calls it asked for
Outcome = tuple[dict[str, Any] | None, tuple[str, str] | None, list[tuple[str, str, list[Any]]]]


def run_detached(session: Session, job_uuid: str, settings: HeadnodeSettings,
                 step: Step) -> Outcome:
    """Run an own-turn step on the job as committed, holding no lock; whatever it wrote is
    rolled back (its result is recorded by :func:`record_detached`, under the lock)."""
    job = session.get(Job, job_uuid)
    if job is None:
        return None, ("JobNotFound", f"job {job_uuid} is gone"), []
    ctx = StepContext(session, job, settings)
    assert step.run is not None
    try:
        return step.run(ctx), None, ctx.outbox
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
        return None, describe(exc), []
    finally:
        session.rollback()


def record_detached(turn: Turn, step: Step, outcome: Outcome) -> bool:
    """Record the outcome of the own-turn step the job's current attempt ran, and move on;
    False when the job went elsewhere meanwhile (the sweep timed the step out)."""
    entries = turn.entries()
    if (turn.step() is not step or not turn.started()
            or entries[-1].get("finished_at") is not None):
        return False
    result, error, outbox = outcome
    if error is not None:
        fail_step(turn, step, entries[-1], *error)
        return True
    ctx = turn.context()
    ctx.outbox.extend(outbox)
    _succeed_step(turn, entries[-1], result, ctx)
    return True


def _succeed_step(turn: Turn, entry: dict[str, Any], result: dict[str, Any] | None,
                  ctx: StepContext) -> None:
    entry["finished_at"] = now_iso()
    entry["result"] = result if result is not None else "OK"
    turn.touch()
    turn.send_outbox_after(ctx)
    _advance(turn)


def fail_step(turn: Turn, step: Step, entry: dict[str, Any], code: str, message: str,
              final: bool = False) -> None:
    job = turn.job
    log.warning("job %s (%s) server %s: step %s failed (attempt %s): %s: %s", job.uuid,
                job.name, job.server_uuid, step.name, job.attempt, code, message)
    # The outcomes of the batch's later steps are not applied: this step did not succeed.
    turn.ready.clear()
    entry["finished_at"] = now_iso()
    entry["error"] = {"code": code, "message": message}
    turn.touch()
    tries = sum(1 for e in turn.entries() if e["name"] == step.name)
    if tries <= step.retries and not final:
        schedule(turn, job.step_index, inline=False)
        return
    if job.phase == "chain":
        job.error = {"step": step.name, "code": code, "message": message}
        leave_chain(turn)
        return
    # An onerror step failing must not stop the rest of the clean-up.
    _advance(turn)


def _advance(turn: Turn) -> None:
    job = turn.job
    if job.step_index + 1 < len(phase_steps(job)):
        schedule(turn, job.step_index + 1)
        return
    finish(turn, "succeeded" if job.phase == "chain" else "failed")


def schedule(turn: Turn, index: int, inline: bool = True) -> None:
    """Move the job to step ``index``. The next step starts at once in this transaction
    (a step that waits for an agent ends the turn), which saves a message and a
    transaction per step; a retry goes back through the queue so it runs afresh. A
    cancel stops the chain here, unless the node already ran this step in a batch."""
    job = turn.job
    job.step_index = index
    if cancel_due(job) and not turn.ready:  # the step before ended: not waiting
        cancel(turn)
        return
    job.attempt += 1
    step = phase_steps(job)[index]
    job.step_deadline = time.time() + step.timeout
    if inline and not step.own_turn:
        start(turn)
        return
    turn.send_step_after()


def cancel(turn: Turn) -> None:
    """Stop the chain before its current step (abandoning it if it waits for an agent)
    and run the onerror chain; the job ends ``canceled``."""
    record_cancel(turn)
    leave_chain(turn)


def leave_chain(turn: Turn) -> None:
    """The chain stops for good (a step failed, or a cancel, with ``job.error`` saying
    which): the onerror chain runs, or else the job ends."""
    if workflow_of(turn.job).onerror:
        turn.job.phase = "onerror"
        schedule(turn, 0)
    else:
        finish(turn, "failed")


def finish(turn: Turn, execution: str) -> None:
    job = turn.job
    if execution == "failed" and (job.error or {}).get("code") == CANCELED_CODE:
        execution = CANCELED  # the chain stopped because of the cancel
    job.execution = execution
    job.finished_at = utcnow()
    job.step_deadline = None
    if job.machine_uuid:
        machine = job_machine(turn.session, job)
        if machine is not None and machine.job_uuid == job.uuid:
            machine.job_uuid = None


def set_running(turn: Turn) -> None:
    if turn.job.execution == "queued":
        turn.job.execution = "running"
        turn.job.started_at = utcnow()
