"""The sweep's part in a turn: a job found past its step's deadline or its workflow's timeout
has its step sent again, retried or failed, so no job is ever stuck and nothing it holds is
leaked (an agent that never answered, a message lost in a Redis restart)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from headnode.store.models import Job
from workflows.definition import ACTIVE, REGISTRY, Step, log, workflow_of
from workflows.running import dispatch_agent, fail_step
from workflows.turn import Turn


def due_jobs(session: Session, now: float) -> list[tuple[str, bool]]:
    """(job uuid, a cancel was asked) of the jobs the sweep must look at."""
    # Only jobs old enough for the shortest workflow timeout can be past theirs.
    oldest = datetime.fromtimestamp(now - min(w.timeout for w in REGISTRY.values()), UTC)
    rows = session.execute(
        select(Job.uuid, Job.cancel_requested_at.is_not(None)).where(
            Job.execution.in_(ACTIVE),
            or_(Job.step_deadline < now, Job.step_deadline.is_(None),
                (Job.phase == "chain") & (Job.created_at < oldest),
                # a cancel whose message was lost
                (Job.phase == "chain") & Job.cancel_requested_at.is_not(None)),
        )
    ).all()
    return [(job_uuid, bool(canceled)) for job_uuid, canceled in rows]


def expire(turn: Turn, now: float) -> bool:
    """Act on one job the sweep found; False if it turned out to need nothing."""
    job = turn.job
    if job.execution not in ACTIVE:
        return False
    step = turn.step()
    started = turn.started()
    workflow = workflow_of(job)
    if job.phase == "chain" and now - job.created_at.timestamp() > workflow.timeout:
        # The whole job is out of time: no retry, straight to its clean-up.
        entry = turn.entry() if started else turn.start_entry(step)
        fail_step(turn, step, entry, "JobTimeout",
                  f"the {job.name} job did not finish within {workflow.timeout:g} s",
                  final=True)
    elif job.step_deadline is not None and job.step_deadline >= now:
        return False
    elif not started:
        # The message that should run this step was lost: send it again.
        job.step_deadline = now + step.timeout
        turn.send_step_after()
    elif step.is_agent and step.resend and turn.entry().get("deadline", 0) > now:
        # No answer yet, but time is left: the task or its reply may have been lost
        # (a Redis restart). Agent tasks are idempotent, so ask again; whichever
        # answer comes first for this attempt wins, the others are stale.
        entry = turn.entry()
        entry["resends"] = entry.get("resends", 0) + 1
        turn.touch()
        dispatch_agent(turn, step)
    elif step.is_agent and _still_going(turn, step, now):
        # (a step never asked twice is swept before its deadline only when its work was
        # said to have broken: then it is not going, and fails here)
        pass
    else:
        fail_step(turn, step, turn.entry(), "StepTimeout",
                  f"step {step.name} did not finish within {step.timeout:g} s")
    return True


def _still_going(turn: Turn, step: Step, now: float) -> bool:
    """A late agent step whose work is seen going on gets ``step.timeout`` more."""
    if step.alive is None:
        return False
    try:
        going = step.alive(turn.context())
    except Exception as exc:  # noqa: BLE001 - a check that cannot tell says no
        log.warning("job %s: could not tell whether step %s still runs: %s", turn.job.uuid,
                    step.name, exc)
        return False
    if going:
        entry = turn.entry()
        entry["deadline"] = now + step.timeout
        entry["extended"] = entry.get("extended", 0) + 1
        turn.touch()
        turn.job.step_deadline = (min(entry["deadline"], now + turn.settings.resend_interval)
                                  if step.resend else entry["deadline"])
    return going
