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
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, lazyload
from sqlalchemy.orm.attributes import flag_modified

from headnode.config import HeadnodeSettings
from headnode.store.models import Job, Machine, utcnow

log = logging.getLogger(__name__)

#: a queued job whose first message was lost is picked up again after this long
QUEUED_GRACE_SECONDS = 30.0
#: executions of a job that has not ended
ACTIVE = ("queued", "running")
#: the error code of a chain stopped by a cancel, and the execution such a job ends with
CANCELED_CODE = "Canceled"
CANCELED = "canceled"


class StepFailed(Exception):
    """A step's expected failure: recorded on the job with its code, no traceback."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class StepContext:
    session: Session
    job: Job
    settings: HeadnodeSettings
    #: (queue, task name, args) sent after the commit, for fire-and-forget agent calls
    outbox: list[tuple[str, str, list[Any]]] = field(default_factory=list)

    def machine(self) -> Machine:
        machine = job_machine(self.session, self.job)
        if machine is None:
            raise StepFailed("MachineNotFound", f"machine {self.job.machine_uuid} not found")
        return machine


#: where a turn keeps its job's machine (Session.info lives as long as the session)
_HELD_MACHINE = "sdc.job_machine"


def job_machine(session: Session, job: Job) -> Machine | None:
    """The job's machine, read once per turn. The session's identity map holds unchanged
    objects only weakly, so without this each step would read the row again."""
    held = session.info.get(_HELD_MACHINE)
    if held is not None and held.uuid == job.machine_uuid:
        return held  # type: ignore[no-any-return]
    # Steps rarely look at NICs: load them only if one does, not with every machine. A read
    # by primary key needs no flush of the job's pending bookkeeping first.
    with session.no_autoflush:
        machine = session.get(Machine, job.machine_uuid, options=[lazyload(Machine.nics)])
    session.info[_HELD_MACHINE] = machine
    return machine


LocalFn = Callable[[StepContext], dict[str, Any] | None]
ParamsFn = Callable[[StepContext], dict[str, Any]]
ResultFn = Callable[[StepContext, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Step:
    """A local step runs ``run``; an agent step sends ``agent_op`` with ``params(ctx)`` to
    the job's server and hands the agent's result to ``on_result``."""

    name: str
    timeout: float
    run: LocalFn | None = None
    agent_op: str | None = None
    params: ParamsFn | None = None
    on_result: ResultFn | None = None
    retries: int = 0
    #: an agent step sent in the same message as the agent step before it (its params must
    #: not need that step's result): one round trip through the queues instead of two
    joins_previous: bool = False
    #: False when a failure of the step's function (``run`` or ``on_result``) cannot leave
    #: anything half-written: it only reads or raises before it writes (a database error
    #: aborts the whole turn anyway, which rolls back and is asked again by the sweep). It
    #: then runs without a savepoint, which saves a flush and two round trips.
    savepoint: bool = True
    #: an onerror step that undoes on the node what the chain's agent steps did there: it
    #: runs again when the late reply of an agent step a cancel abandoned arrives (the node
    #: may have done that step's work after this clean-up ran)
    repeat_on_late_reply: bool = False

    @property
    def is_agent(self) -> bool:
        return self.agent_op is not None


@dataclass(frozen=True)
class Workflow:
    name: str
    chain: tuple[Step, ...]
    onerror: tuple[Step, ...] = ()
    timeout: float = 3600.0

    def steps(self, phase: str) -> tuple[Step, ...]:
        return self.chain if phase == "chain" else self.onerror


class Transport:
    """How the engine sends messages; the Celery implementation is in workflows.dispatch."""

    def send_step(self, job_uuid: str, attempt: int) -> None:
        raise NotImplementedError

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any],
                   reply: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def send_raw(self, queue: str, task: str, args: list[Any]) -> None:
        raise NotImplementedError


REGISTRY: dict[str, Workflow] = {}


def register(workflow: Workflow) -> Workflow:
    REGISTRY[workflow.name] = workflow
    return workflow


def new_job(
    session: Session,
    workflow_name: str,
    *,
    machine_uuid: str | None,
    server_uuid: str | None,
    owner_uuid: str | None,
    params: dict[str, Any] | None = None,
    caller: dict[str, Any] | None = None,
    job_uuid: str | None = None,
    resend_after: float = QUEUED_GRACE_SECONDS,
) -> Job:
    """Add a queued job to the session; the caller enqueues it after its commit. If that
    message is lost, the sweep sends it again ``resend_after`` seconds later."""
    workflow = REGISTRY[workflow_name]
    params = dict(params or {})
    params["chain"] = [s.name for s in workflow.chain]
    params["onerror"] = [s.name for s in workflow.onerror]
    job_kwargs: dict[str, Any] = {"uuid": job_uuid} if job_uuid else {}
    job = Job(
        name=workflow_name,
        machine_uuid=machine_uuid,
        server_uuid=server_uuid,
        owner_uuid=owner_uuid,
        params=params,
        caller=caller or {},
        execution="queued",
        phase="chain",
        step_index=0,
        attempt=1,
        step_deadline=time.time() + resend_after,
        chain_results=[],
        onerror_results=[],
        **job_kwargs,
    )
    session.add(job)
    return job


class Engine:
    def __init__(self, settings: HeadnodeSettings, sessions: Callable[[], Session],
                 transport: Transport) -> None:
        self.settings = settings
        self.sessions = sessions
        self.transport = transport

    # -- entry points (one per Celery task) ------------------------------------------------

    def run_step(self, job_uuid: str, attempt: int) -> None:
        after: list[Callable[[], None]] = []
        with self.sessions() as session, session.begin():
            job = self._lock(session, job_uuid)
            if job is None or job.attempt != attempt or job.execution not in ACTIVE:
                _log_ignored_step(job_uuid, attempt, job)
                return  # stale or duplicate message: nothing was queued in ``after``
            entries = job.chain_results if job.phase == "chain" else job.onerror_results
            if entries and entries[-1].get("attempt") == attempt:
                # This attempt has started already (an agent step waiting for its reply):
                # a redelivered or re-sent message must not call the agent again.
                return
            _set_running(job)
            if _cancel_now(job):
                self._cancel(session, job, after)
            else:
                self._start(session, job, after)
        # Only after the commit: a message must never name state that might roll back.
        for fn in after:
            fn()

    def cancel(self, job_uuid: str) -> bool:
        """Act on a cancel the API recorded, at once: the job is between two turns (its row
        lock says so), so this is a step boundary. False if there is nothing to do now (the
        job ended, its onerror chain runs already, or the node's reply to the step it waits
        for will be the boundary)."""
        after: list[Callable[[], None]] = []
        with self.sessions() as session, session.begin():
            job = self._lock(session, job_uuid)
            if job is None or not _cancel_now(job):
                return False
            _set_running(job)
            self._cancel(session, job, after)
        for fn in after:
            fn()
        return True

    def on_agent_reply(self, reply: dict[str, Any], outcome: dict[str, Any]) -> None:
        after: list[Callable[[], None]] = []
        with self.sessions() as session, session.begin():
            self._apply_reply(session, reply, outcome, after)
        for fn in after:
            fn()

    def _apply_reply(self, session: Session, reply: dict[str, Any], outcome: dict[str, Any],
                     after: list[Callable[[], None]]) -> None:
        job = self._lock(session, reply["job_uuid"])
        if job is None or job.attempt != reply["attempt"] or job.execution != "running":
            log.info("ignoring a stale agent reply for job %s from server %s",
                     reply.get("job_uuid"), outcome.get("server_uuid"))
            if job is not None:
                self._after_abandoned_reply(session, job, reply, outcome, after)
            return
        step = self._step(job)
        if not step.is_agent or job.step_index != reply["step"]:
            return
        ready: deque[dict[str, Any]] = deque()
        if reply.get("batch") and outcome.get("ok"):
            # One outcome per step the batch carried, up to the first that failed.
            ready.extend((outcome.get("result") or {}).get("outcomes") or [])
        first = ready.popleft() if ready else outcome
        self._apply_outcome(session, job, step, self._entry(job), first, after, ready)

    def _apply_outcome(self, session: Session, job: Job, step: Step, entry: dict[str, Any],
                       outcome: dict[str, Any], after: list[Callable[[], None]],
                       ready: deque[dict[str, Any]]) -> None:
        """Finish an agent step with what the node answered."""
        if not outcome.get("ok"):
            error = outcome.get("error") or {}
            self._fail_step(session, job, step, entry,
                            error.get("code", "AgentError"), error.get("message", ""), after)
            return
        ctx = StepContext(session, job, self.settings)
        result = outcome.get("result")
        if step.on_result is not None:
            try:
                with _savepoint(session, step):
                    result = step.on_result(ctx, result or {})
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
                code, message = _describe(exc)
                self._fail_step(session, job, step, entry, code, message, after)
                return
        # A step whose outcome came in a batch with later steps ended when the node says,
        # not when the reply for the whole batch arrived.
        ended = _iso(outcome["finished_at"]) if ready and outcome.get("finished_at") else None
        self._succeed_step(session, job, entry, result, ctx, after, ready)
        if ended:
            entry["finished_at"] = ended

    def sweep(self, now: float | None = None) -> int:
        """Handle steps past their deadline and jobs past their workflow's timeout."""
        now = time.time() if now is None else now
        # Only jobs old enough for the shortest workflow timeout can be past theirs.
        oldest = datetime.fromtimestamp(now - min(w.timeout for w in REGISTRY.values()), UTC)
        with self.sessions() as session:
            due = session.execute(
                select(Job.uuid, Job.cancel_requested_at.is_not(None)).where(
                    Job.execution.in_(ACTIVE),
                    or_(Job.step_deadline < now, Job.step_deadline.is_(None),
                        (Job.phase == "chain") & (Job.created_at < oldest),
                        # a cancel whose message was lost
                        (Job.phase == "chain") & Job.cancel_requested_at.is_not(None)),
                )
            ).all()
        return sum(1 for job_uuid, canceled in due
                   if (canceled and self.cancel(job_uuid)) or self._expire(job_uuid, now))

    # -- internals -------------------------------------------------------------------------

    def _expire(self, job_uuid: str, now: float) -> bool:
        """Act on one job the sweep found; False if it turned out to need nothing."""
        after: list[Callable[[], None]] = []
        with self.sessions() as session, session.begin():
            job = self._lock(session, job_uuid)
            if job is None or job.execution not in ACTIVE:
                return False
            step = self._step(job)
            entries = job.chain_results if job.phase == "chain" else job.onerror_results
            started = bool(entries) and entries[-1].get("attempt") == job.attempt
            workflow = REGISTRY[job.name]
            if job.phase == "chain" and now - job.created_at.timestamp() > workflow.timeout:
                # The whole job is out of time: no retry, straight to its clean-up.
                entry = entries[-1] if started else self._start_entry(job, step)
                self._fail_step(session, job, step, entry, "JobTimeout",
                                f"the {job.name} job did not finish within "
                                f"{workflow.timeout:g} s", after, final=True)
            elif job.step_deadline is not None and job.step_deadline >= now:
                return False
            elif not started:
                # The message that should run this step was lost: send it again.
                job.step_deadline = now + step.timeout
                after.append(lambda: self.transport.send_step(job.uuid, job.attempt))
            elif step.is_agent and entries[-1].get("deadline", 0) > now:
                # No answer yet, but time is left: the task or its reply may have been lost
                # (a Redis restart). Agent tasks are idempotent, so ask again; whichever
                # answer comes first for this attempt wins, the others are stale.
                entries[-1]["resends"] = entries[-1].get("resends", 0) + 1
                self._touch(job)
                self._dispatch_agent(session, job, step, after)
            else:
                self._fail_step(session, job, step, entries[-1], "StepTimeout",
                                f"step {step.name} did not finish within {step.timeout:g} s",
                                after)
        for fn in after:
            fn()
        return True

    @staticmethod
    def _lock(session: Session, job_uuid: str) -> Job | None:
        return session.scalars(
            select(Job).where(Job.uuid == job_uuid).with_for_update()
        ).one_or_none()

    @staticmethod
    def _step(job: Job) -> Step:
        return REGISTRY[job.name].steps(job.phase)[job.step_index]

    @staticmethod
    def _entry(job: Job) -> dict[str, Any]:
        entries = job.chain_results if job.phase == "chain" else job.onerror_results
        return entries[-1]

    def _start_entry(self, job: Job, step: Step) -> dict[str, Any]:
        entry = {"name": step.name, "attempt": job.attempt, "started_at": _now_iso(),
                 "finished_at": None, "result": None, "error": None}
        (job.chain_results if job.phase == "chain" else job.onerror_results).append(entry)
        self._touch(job)
        job.step_deadline = time.time() + step.timeout
        if step.is_agent:
            # A batch runs its steps one after the other: wait as long as all may take.
            entry["deadline"] = time.time() + sum(s.timeout for s in self._batch(job))
        return entry

    def _touch(self, job: Job) -> None:
        # Step entries are changed in place; plain JSON columns do not notice that.
        flag_modified(job, "chain_results")
        flag_modified(job, "onerror_results")

    def _start(self, session: Session, job: Job, after: list[Callable[[], None]],
               ready: deque[dict[str, Any]] | None = None) -> None:
        step = self._step(job)
        entry = self._start_entry(job, step)
        if step.is_agent and step.joins_previous and ready:
            # The node already ran this step, in the message of the step before it.
            outcome = ready.popleft()
            if outcome.get("started_at"):
                entry["started_at"] = _iso(outcome["started_at"])
            self._apply_outcome(session, job, step, entry, outcome, after, ready)
        elif step.is_agent:
            self._dispatch_agent(session, job, step, after)
        else:
            self._run_local(session, job, step, entry, after)

    def _batch(self, job: Job) -> list[Step]:
        """The agent steps one message carries, starting at the job's current step."""
        steps = REGISTRY[job.name].steps(job.phase)
        batch = [steps[job.step_index]]
        for step in steps[job.step_index + 1:]:
            if not (step.is_agent and step.joins_previous):
                break
            batch.append(step)
        return batch

    def _dispatch_agent(self, session: Session, job: Job, step: Step,
                        after: list[Callable[[], None]]) -> None:
        ctx = StepContext(session, job, self.settings)
        batch = self._batch(job)
        try:
            # No savepoint: building a payload only reads.
            ops: list[tuple[str, dict[str, Any]]] = [
                (s.agent_op or "", s.params(ctx) if s.params else {}) for s in batch]
        except Exception as exc:  # noqa: BLE001
            code, message = _describe(exc)
            self._fail_step(session, job, step, self._entry(job), code, message, after)
            return
        server_uuid = job.server_uuid
        if server_uuid is None:
            self._fail_step(session, job, step, self._entry(job), "NoServer",
                            "the job has no server to send the step to", after)
            return
        reply: dict[str, Any] = {"job_uuid": job.uuid, "step": job.step_index,
                                 "attempt": job.attempt}
        op, params = ops[0]
        if len(ops) > 1:
            op, params = "batch", {"ops": [{"op": o, "params": p} for o, p in ops]}
            reply["batch"] = len(ops)
        # Wake the sweep before the real deadline, to ask again if no answer came by then.
        job.step_deadline = min(self._entry(job)["deadline"],
                                time.time() + self.settings.resend_interval)
        after.append(lambda: self.transport.send_agent(server_uuid, op, params, reply))

    def _run_local(self, session: Session, job: Job, step: Step, entry: dict[str, Any],
                   after: list[Callable[[], None]]) -> None:
        ctx = StepContext(session, job, self.settings)
        assert step.run is not None
        try:
            with _savepoint(session, step):
                result = step.run(ctx)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
            code, message = _describe(exc)
            self._fail_step(session, job, step, entry, code, message, after)
            return
        self._succeed_step(session, job, entry, result, ctx, after)

    def _succeed_step(self, session: Session, job: Job, entry: dict[str, Any],
                      result: dict[str, Any] | None, ctx: StepContext,
                      after: list[Callable[[], None]],
                      ready: deque[dict[str, Any]] | None = None) -> None:
        entry["finished_at"] = _now_iso()
        entry["result"] = result if result is not None else "OK"
        self._touch(job)
        after.extend(partial(self.transport.send_raw, queue, task, args)
                     for queue, task, args in ctx.outbox)
        self._advance(session, job, after, ready)

    def _fail_step(self, session: Session, job: Job, step: Step, entry: dict[str, Any],
                   code: str, message: str, after: list[Callable[[], None]],
                   final: bool = False) -> None:
        log.warning("job %s (%s) server %s: step %s failed (attempt %s): %s: %s", job.uuid,
                    job.name, job.server_uuid, step.name, job.attempt, code, message)
        entry["finished_at"] = _now_iso()
        entry["error"] = {"code": code, "message": message}
        self._touch(job)
        tries = sum(1 for e in (job.chain_results if job.phase == "chain"
                                else job.onerror_results) if e["name"] == step.name)
        if tries <= step.retries and not final:
            self._schedule(session, job, job.step_index, after, inline=False)
            return
        if job.phase == "chain":
            job.error = {"step": step.name, "code": code, "message": message}
            workflow = REGISTRY[job.name]
            if workflow.onerror:
                job.phase = "onerror"
                self._schedule(session, job, 0, after)
                return
            self._finish(session, job, "failed")
            return
        # An onerror step failing must not stop the rest of the clean-up.
        self._advance(session, job, after)

    def _advance(self, session: Session, job: Job, after: list[Callable[[], None]],
                 ready: deque[dict[str, Any]] | None = None) -> None:
        steps = REGISTRY[job.name].steps(job.phase)
        if job.step_index + 1 < len(steps):
            self._schedule(session, job, job.step_index + 1, after, ready=ready)
            return
        self._finish(session, job, "succeeded" if job.phase == "chain" else "failed")

    def _schedule(self, session: Session, job: Job, index: int,
                  after: list[Callable[[], None]], inline: bool = True,
                  ready: deque[dict[str, Any]] | None = None) -> None:
        """Move the job to step ``index``. The next step starts at once in this transaction
        (a step that waits for an agent ends the turn), which saves a message and a
        transaction per step; a retry goes back through the queue so it runs afresh. A
        cancel stops the chain here, unless the node already ran this step in a batch."""
        job.step_index = index
        if _cancel_due(job) and not ready:  # the step before ended: not waiting
            self._cancel(session, job, after)
            return
        job.attempt += 1
        step = REGISTRY[job.name].steps(job.phase)[index]
        job.step_deadline = time.time() + step.timeout
        if inline:
            self._start(session, job, after, ready)
            return
        job_uuid, attempt = job.uuid, job.attempt
        after.append(lambda: self.transport.send_step(job_uuid, attempt))

    def _cancel(self, session: Session, job: Job, after: list[Callable[[], None]]) -> None:
        """Stop the chain before its current step (abandoning it if it waits for an agent)
        and run the onerror chain; the job ends ``canceled``."""
        step = self._step(job)
        entries = job.chain_results
        if _waiting(job):
            entries[-1]["finished_at"] = _now_iso()
            entries[-1]["error"] = {"code": CANCELED_CODE,
                                    "message": "canceled while waiting for the node; "
                                               "its reply will be ignored"}
            self._touch(job)
            where = f"while step {step.name} waited for the node"
        else:
            where = f"before step {step.name}"
        asked = job.cancel_requested_at.isoformat() if job.cancel_requested_at else "?"
        job.error = {"step": step.name, "code": CANCELED_CODE,
                     "message": f"canceled {where} (asked by {_who(job.canceled_by)} at "
                                f"{asked})"}
        log.info("job %s (%s) server %s: %s", job.uuid, job.name, job.server_uuid,
                 job.error["message"])
        if REGISTRY[job.name].onerror:
            job.phase = "onerror"
            self._schedule(session, job, 0, after)
        else:
            self._finish(session, job, CANCELED)

    def _after_abandoned_reply(self, session: Session, job: Job, reply: dict[str, Any],
                               outcome: dict[str, Any],
                               after: list[Callable[[], None]]) -> None:
        """The late reply of an agent step a cancel abandoned: whatever the node did for it
        may have happened after the clean-up, so the clean-up on the node runs again. The
        reply changes nothing else."""
        abandoned = next((e for e in job.chain_results
                          if e.get("attempt") == reply.get("attempt")
                          and (e.get("error") or {}).get("code") == CANCELED_CODE), None)
        repeat = [s for s in REGISTRY[job.name].onerror if s.repeat_on_late_reply and s.run]
        if abandoned is None or not repeat:
            return
        ctx = StepContext(session, job, self.settings)
        for step in repeat:
            assert step.run is not None
            try:
                with _savepoint(session, step):
                    step.run(ctx)
            except Exception as exc:  # noqa: BLE001 - best effort, recorded below
                log.warning("job %s: %s after a late reply failed: %s", job.uuid, step.name,
                            _describe(exc)[1])
        abandoned.setdefault("late_replies", []).append(
            {"at": _now_iso(), "ok": bool(outcome.get("ok")),
             "repeated": [s.name for s in repeat]})
        self._touch(job)
        after.extend(partial(self.transport.send_raw, queue, task, args)
                     for queue, task, args in ctx.outbox)
        log.info("job %s: late reply to a canceled step; repeated %s", job.uuid,
                 ", ".join(s.name for s in repeat))

    def _finish(self, session: Session, job: Job, execution: str) -> None:
        if execution == "failed" and (job.error or {}).get("code") == CANCELED_CODE:
            execution = CANCELED  # the onerror chain ran because of the cancel
        job.execution = execution
        job.finished_at = utcnow()
        job.step_deadline = None
        if job.machine_uuid:
            machine = job_machine(session, job)
            if machine is not None and machine.job_uuid == job.uuid:
                machine.job_uuid = None


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


def _cancel_due(job: Job) -> bool:
    """A cancel was asked for and the chain still runs (a cancel never stops a clean-up)."""
    return (job.cancel_requested_at is not None and job.phase == "chain"
            and job.execution in ACTIVE and cancel_refusal(job) is None)


def _waiting(job: Job) -> bool:
    """The job's current step is an agent step waiting for its reply."""
    entries = job.chain_results if job.phase == "chain" else job.onerror_results
    return (bool(entries) and entries[-1].get("attempt") == job.attempt
            and entries[-1].get("finished_at") is None)


def _cancel_now(job: Job) -> bool:
    """A cancel stops the job at this point. An agent step waiting for its reply is abandoned
    only if the onerror chain undoes the node's work however late it comes
    (``repeat_on_late_reply``); otherwise that reply is the step boundary the job stops at."""
    if not _cancel_due(job):
        return False
    return not _waiting(job) or any(s.repeat_on_late_reply for s in REGISTRY[job.name].onerror)


def _set_running(job: Job) -> None:
    if job.execution == "queued":
        job.execution = "running"
        job.started_at = utcnow()


def _who(caller: dict[str, Any] | None) -> str:
    caller = caller or {}
    return str(caller.get("login") or caller.get("account") or caller.get("type")
               or "an operator")


def _log_ignored_step(job_uuid: str, attempt: int, job: Job | None) -> None:
    if job is None:
        log.warning("ignoring a step message for job %s: no such job", job_uuid)
    else:
        log.info("ignoring a stale or duplicate step message for job %s (attempt %s, now %s, "
                 "%s) server %s", job_uuid, attempt, job.attempt, job.execution,
                 job.server_uuid)


def _savepoint(session: Session, step: Step) -> AbstractContextManager[Any]:
    """Where a failing step's writes are rolled back to, unless it needs none."""
    return session.begin_nested() if step.savepoint else nullcontext()


def _describe(exc: Exception) -> tuple[str, str]:
    if isinstance(exc, StepFailed):
        return exc.code, exc.message
    log.error("step raised an unexpected error:\n%s", traceback.format_exc())
    return "InternalError", f"{type(exc).__name__}: {exc}"


def _iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, UTC).isoformat()


def _now_iso() -> str:
    return utcnow().isoformat()
