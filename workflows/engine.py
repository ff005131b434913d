"""The job engine: workflows made of steps, each run as its own Celery message.

A job row holds where it is (phase, step index) and a counter, ``attempt``, that grows every
time a step is scheduled; every message names the attempt it is for, so a late, duplicated or
redelivered message (a retried step, an agent reply after a timeout) is recognised as stale and
ignored. Each step runs in its own database transaction with the job row locked; a step that
raises is rolled back to a savepoint (unless it cannot half-write) and its error recorded. A
step that calls an agent sends the agent task after the commit and finishes when
``events.task_reply`` arrives. Consecutive agent steps marked ``joins_previous`` travel in one
``agent.batch`` message and come back in one reply, whose outcomes the engine then applies
step by step as if each had its own reply.

Steps have a deadline. The periodic sweep (``workflows.reconcile``) treats a step past its
deadline as failed (an agent that never answered) or lost (a message dropped by a Redis
restart) and retries or fails it, so no job is ever stuck and nothing it holds is leaked.

A cancel (``Job.cancel_requested_at``, written by the API) stops the chain at its next step
boundary: the step that would run next does not, and the onerror chain runs; the job then ends
``canceled``. An agent step still waiting for its reply is abandoned (the attempt moves on, so
the reply is stale when it comes) if the onerror chain has steps marked
``repeat_on_late_reply``, which undo on the node whatever it did: the node may still do the
abandoned work after the clean-up ran, so its late reply makes those steps run once more.
Otherwise the reply is the boundary. A chain without an onerror chain can be canceled only
before its first step (``cancel_refusal``).

This module holds the entry points (``Engine``) and the names other code imports; the parts
are ``workflows.definition`` (steps, workflows, their registry, a new job),
``workflows.turn`` (one transaction on one job and what it sends after its commit; the
``Transport``), ``workflows.running`` (running steps, retries, the onerror chain, the job's
end), ``workflows.cancel`` and ``workflows.deadlines`` (what the sweep does with a job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from headnode.config import HeadnodeSettings
from headnode.store.models import Job
from workflows.cancel import CANCELED, CANCELED_CODE, after_abandoned_reply, cancel_now
from workflows.cancel import cancel_refusal as cancel_refusal
from workflows.deadlines import due_jobs, expire
from workflows.definition import (
    ACTIVE,
    QUEUED_GRACE_SECONDS,
    REGISTRY,
    Step,
    StepContext,
    StepFailed,
    Workflow,
    job_machine,
    log,
    new_job,
    register,
)
from workflows.running import (
    apply_reply,
    cancel,
    record_detached,
    run_detached,
    set_running,
    start,
)
from workflows.turn import Transport, Turn, lock_job

#: what other code imports from here (the parts live in the modules named above)
__all__ = ["ACTIVE", "CANCELED", "CANCELED_CODE", "QUEUED_GRACE_SECONDS", "REGISTRY", "Engine",
           "Step", "StepContext", "StepFailed", "Transport", "Workflow", "cancel_refusal",
           "job_machine", "new_job", "register"]


class Engine:
    """The entry points, one per Celery task: each is one turn (a transaction on the locked
    job) and sends what the turn queued only after its commit."""

    def __init__(self, settings: HeadnodeSettings, sessions: Callable[[], Session],
                 transport: Transport) -> None:
        self.settings = settings
        self.sessions = sessions
        self.transport = transport

    def _turn(self, session: Session, job_uuid: str) -> Turn | None:
        job = lock_job(session, job_uuid)
        return None if job is None else Turn(session, job, self.settings, self.transport)

    def run_step(self, job_uuid: str, attempt: int) -> None:
        with self.sessions() as session, session.begin():
            turn = self._turn(session, job_uuid)
            if turn is None or turn.job.attempt != attempt or turn.job.execution not in ACTIVE:
                _log_ignored_step(job_uuid, attempt, turn.job if turn else None)
                return  # stale or duplicate message: the turn queued nothing
            if turn.started():
                # This attempt has started already (an agent step waiting for its reply):
                # a redelivered or re-sent message must not call the agent again.
                return
            set_running(turn)
            if cancel_now(turn.job):
                cancel(turn)
            else:
                start(turn)
        # Only after the commit: a message must never name state that might roll back.
        turn.send()
        if turn.detached is not None:
            self._run_detached(job_uuid, attempt, turn.detached)

    def _run_detached(self, job_uuid: str, attempt: int, step: Step) -> None:
        """An own-turn step: run without the job's lock, then record it in a short turn."""
        with self.sessions() as session:
            outcome = run_detached(session, job_uuid, self.settings, step)
        with self.sessions() as session, session.begin():
            turn = self._turn(session, job_uuid)
            if (turn is None or turn.job.attempt != attempt
                    or turn.job.execution not in ACTIVE
                    or not record_detached(turn, step, outcome)):
                log.info("job %s: step %s (attempt %s) ended after the job moved on; its "
                         "outcome is not recorded", job_uuid, step.name, attempt)
                return
        turn.send()

    def cancel(self, job_uuid: str) -> bool:
        """Act on a cancel the API recorded, at once: the job is between two turns (its row
        lock says so), so this is a step boundary. False if there is nothing to do now (the
        job ended, its onerror chain runs already, or the node's reply to the step it waits
        for will be the boundary)."""
        with self.sessions() as session, session.begin():
            turn = self._turn(session, job_uuid)
            if turn is None or not cancel_now(turn.job):
                return False
            set_running(turn)
            cancel(turn)
        turn.send()
        return True

    def on_agent_reply(self, reply: dict[str, Any], outcome: dict[str, Any],
                       from_server: str | None = None) -> None:
        """An agent's answer to a step; ``from_server``, when the node that sent it is
        proven (a signed message), must be the node the step went to."""
        with self.sessions() as session, session.begin():
            turn = self._turn(session, reply["job_uuid"])
            sent_to = None if turn is None else step_server(turn.job, reply.get("attempt"))
            if turn is not None and from_server is not None and sent_to != from_server:
                log.warning("ignoring a reply for job %s from server %s: its step went to %s",
                            reply["job_uuid"], from_server, sent_to)
                return
            if turn is not None and turn.job.attempt == reply["attempt"] \
                    and turn.job.execution == "running":
                apply_reply(turn, reply, outcome)
            else:
                log.info("ignoring a stale agent reply for job %s from server %s",
                         reply.get("job_uuid"), outcome.get("server_uuid"))
                if turn is None:
                    return
                after_abandoned_reply(turn, reply, outcome)
        turn.send()

    def sweep(self, now: float | None = None) -> int:
        """Handle steps past their deadline and jobs past their workflow's timeout."""
        now = time.time() if now is None else now
        with self.sessions() as session:
            due = due_jobs(session, now)
        return sum(1 for job_uuid, canceled in due
                   if (canceled and self.cancel(job_uuid)) or self._expire(job_uuid, now))

    def _expire(self, job_uuid: str, now: float) -> bool:
        with self.sessions() as session, session.begin():
            turn = self._turn(session, job_uuid)
            if turn is None or not expire(turn, now):
                return False
        turn.send()
        return True


def step_server(job: Job, attempt: Any) -> str | None:
    """The server the job's agent step of ``attempt`` was sent to (its record says, for a
    step with a server of its own); else the job's server."""
    for entries in (job.onerror_results, job.chain_results):
        for entry in reversed(entries):
            if entry.get("attempt") == attempt:
                return entry.get("server") or job.server_uuid
    return job.server_uuid


def _log_ignored_step(job_uuid: str, attempt: int, job: Job | None) -> None:
    if job is None:
        log.warning("ignoring a step message for job %s: no such job", job_uuid)
    else:
        log.info("ignoring a stale or duplicate step message for job %s (attempt %s, now %s, "
                 "%s) server %s", job_uuid, attempt, job.attempt, job.execution,
                 job.server_uuid)
