"""One turn of the engine: a transaction on one locked job, and what it sends once that
transaction has committed (a message must never name state that might still roll back)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from headnode.config import HeadnodeSettings
from headnode.store.models import Job, utcnow
from workflows.definition import Step, StepContext, current_step, phase_results, phase_steps


class Transport(Protocol):
    """How the engine sends messages; the Celery implementation is in workflows.dispatch."""

    def send_step(self, job_uuid: str, attempt: int) -> None: ...

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any],
                   reply: dict[str, Any] | None) -> None: ...

    def send_raw(self, queue: str, task: str, args: list[Any]) -> None: ...


def lock_job(session: Session, job_uuid: str) -> Job | None:
    return session.scalars(
        select(Job).where(Job.uuid == job_uuid).with_for_update()
    ).one_or_none()


@dataclass
class Turn:
    session: Session
    job: Job
    settings: HeadnodeSettings
    transport: Transport
    #: messages to send after the commit, in order
    outbox: list[Callable[[], None]] = field(default_factory=list)
    #: outcomes of an ``agent.batch`` reply not applied yet: one per later step the batch
    #: carried, up to the first that failed
    ready: deque[dict[str, Any]] = field(default_factory=deque)
    #: an own-turn step this turn started: it runs once the turn has committed
    detached: Step | None = None

    # -- where the job is ------------------------------------------------------------------

    def step(self) -> Step:
        return current_step(self.job)

    def entries(self) -> list[dict[str, Any]]:
        return phase_results(self.job)

    def entry(self) -> dict[str, Any]:
        return phase_results(self.job)[-1]

    def started(self) -> bool:
        """The job's current attempt has a record: its step has begun."""
        entries = phase_results(self.job)
        return bool(entries) and entries[-1].get("attempt") == self.job.attempt

    def batch(self) -> list[Step]:
        """The agent steps one message carries, starting at the job's current step."""
        steps = phase_steps(self.job)
        batch = [steps[self.job.step_index]]
        for step in steps[self.job.step_index + 1:]:
            if not (step.is_agent and step.joins_previous):
                break
            batch.append(step)
        return batch

    def context(self) -> StepContext:
        """What one step's function sees (its own outbox: a failed step sends nothing)."""
        return StepContext(self.session, self.job, self.settings)

    # -- the job's records -----------------------------------------------------------------

    def touch(self) -> None:
        # Step entries are changed in place; plain JSON columns do not notice that.
        flag_modified(self.job, "chain_results")
        flag_modified(self.job, "onerror_results")

    def start_entry(self, step: Step) -> dict[str, Any]:
        entry = {"name": step.name, "attempt": self.job.attempt, "started_at": now_iso(),
                 "finished_at": None, "result": None, "error": None}
        phase_results(self.job).append(entry)
        self.touch()
        self.job.step_deadline = time.time() + step.timeout
        if step.is_agent:
            # A batch runs its steps one after the other: wait as long as all may take.
            entry["deadline"] = time.time() + sum(s.timeout for s in self.batch())
        return entry

    # -- messages after the commit ---------------------------------------------------------

    def send_step_after(self) -> None:
        job_uuid, attempt = self.job.uuid, self.job.attempt
        self.outbox.append(lambda: self.transport.send_step(job_uuid, attempt))

    def send_agent_after(self, server_uuid: str, op: str, params: dict[str, Any],
                         reply: dict[str, Any]) -> None:
        self.outbox.append(lambda: self.transport.send_agent(server_uuid, op, params, reply))

    def send_outbox_after(self, ctx: StepContext) -> None:
        """The fire-and-forget calls a step that succeeded asked for."""
        self.outbox.extend(partial(self.transport.send_raw, queue, task, args)
                           for queue, task, args in ctx.outbox)

    def send(self) -> None:
        """Send what the turn queued; call only once its transaction has committed."""
        for fn in self.outbox:
            fn()


def iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).isoformat()


def now_iso() -> str:
    return utcnow().isoformat()
