"""Cancel: when a cancel the API recorded (``Job.cancel_requested_at``) stops a job, what it
writes on the job, and what the late reply of a step it abandoned makes run again.

Which steps then run (the onerror chain) is ``workflows.running``'s business."""

from __future__ import annotations

from typing import Any

from headnode.store.models import Job
from workflows.definition import (
    ACTIVE,
    REGISTRY,
    describe,
    log,
    phase_results,
    savepoint,
    workflow_of,
)
from workflows.turn import Turn, now_iso

#: the error code of a chain stopped by a cancel, and the execution such a job ends with
CANCELED_CODE = "Canceled"
CANCELED = "canceled"


def cancel_refusal(job: Job) -> str | None:
    """Why the job cannot be canceled, or None if it can. A chain may stop between two steps
    only if an onerror chain undoes what the steps before did; without one, it may stop only
    before its first step (a destroy stopped after the node's part would leave the records
    saying the machine is there)."""
    workflow = REGISTRY.get(job.name)
    if workflow is None or workflow.onerror or not job.chain_results:
        return None
    return (f"the {job.name} job has started and has no onerror chain to undo what its steps "
            "did: it runs to its end")


def cancel_due(job: Job) -> bool:
    """A cancel was asked for and the chain still runs (a cancel never stops a clean-up)."""
    return (job.cancel_requested_at is not None and job.phase == "chain"
            and job.execution in ACTIVE and cancel_refusal(job) is None)


def waiting(job: Job) -> bool:
    """The job's current step is an agent step waiting for its reply."""
    entries = phase_results(job)
    return (bool(entries) and entries[-1].get("attempt") == job.attempt
            and entries[-1].get("finished_at") is None)


def cancel_now(job: Job) -> bool:
    """A cancel stops the job at this point. An agent step waiting for its reply is abandoned
    only if the onerror chain undoes the node's work however late it comes
    (``repeat_on_late_reply``); otherwise that reply is the step boundary the job stops at."""
    if not cancel_due(job):
        return False
    return not waiting(job) or any(s.repeat_on_late_reply for s in workflow_of(job).onerror)


def record_cancel(turn: Turn) -> None:
    """Write on the job that it stops before its current step (abandoning that step if it
    waits for an agent); the caller then leaves the chain."""
    job = turn.job
    step = turn.step()
    entries = job.chain_results
    if waiting(job):
        entries[-1]["finished_at"] = now_iso()
        entries[-1]["error"] = {"code": CANCELED_CODE,
                                "message": "canceled while waiting for the node; "
                                           "its reply will be ignored"}
        turn.touch()
        where = f"while step {step.name} waited for the node"
    else:
        where = f"before step {step.name}"
    asked = job.cancel_requested_at.isoformat() if job.cancel_requested_at else "?"
    job.error = {"step": step.name, "code": CANCELED_CODE,
                 "message": f"canceled {where} (asked by {_who(job.canceled_by)} at "
                            f"{asked})"}
    log.info("job %s (%s) server %s: %s", job.uuid, job.name, job.server_uuid,
             job.error["message"])


def after_abandoned_reply(turn: Turn, reply: dict[str, Any], outcome: dict[str, Any]) -> None:
    """The late reply of an agent step a cancel abandoned: whatever the node did for it
    may have happened after the clean-up, so the clean-up on the node runs again. The
    reply changes nothing else."""
    job = turn.job
    abandoned = next((e for e in job.chain_results
                      if e.get("attempt") == reply.get("attempt")
                      and (e.get("error") or {}).get("code") == CANCELED_CODE), None)
    repeat = [s for s in workflow_of(job).onerror if s.repeat_on_late_reply and s.run]
    if abandoned is None or not repeat:
        return
    ctx = turn.context()
    for step in repeat:
        assert step.run is not None
        try:
            with savepoint(turn.session, step):
                step.run(ctx)
        except Exception as exc:  # noqa: BLE001 - best effort, recorded below
            log.warning("job %s: %s after a late reply failed: %s", job.uuid, step.name,
                        describe(exc)[1])
    abandoned.setdefault("late_replies", []).append(
        {"at": now_iso(), "ok": bool(outcome.get("ok")),
         "repeated": [s.name for s in repeat]})
    turn.touch()
    turn.send_outbox_after(ctx)
    log.info("job %s: late reply to a canceled step; repeated %s", job.uuid,
             ", ".join(s.name for s in repeat))


def _who(caller: dict[str, Any] | None) -> str:
    caller = caller or {}
    return str(caller.get("login") or caller.get("account") or caller.get("type")
               or "an operator")
