"""What a workflow is made of: steps, the context a step runs with, the registry of
workflows, and a new job's row. The engine that runs them is ``workflows.engine``."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, lazyload

from headnode.config import HeadnodeSettings
from headnode.store.models import Job, Machine

#: every part of the engine logs under one name, the one it had before it was split
log = logging.getLogger("workflows.engine")

#: a queued job whose first message was lost is picked up again after this long
QUEUED_GRACE_SECONDS = 30.0
#: executions of a job that has not ended
ACTIVE = ("queued", "running")


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
ServerFn = Callable[[StepContext], str | None]
WhenFn = Callable[[StepContext], bool]


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
    #: a local step that takes long (minutes of SSH to a node): the step before it commits
    #: first, and it runs in a turn of its own *outside* the job's lock and transaction
    #: (``workflows.running.run_detached``), its outcome recorded by a short turn after.
    #: So a step message redelivered meanwhile, a cancel or `sdc job get --watch` never
    #: waits on it, and the job's record shows it started. Its function may read the
    #: database (its writes are rolled back) and must be idempotent.
    own_turn: bool = False
    #: the server an agent step goes to (a migration's steps go to its source or its
    #: target); None: the job's server. The step's record names the server it went to, and
    #: only that server's signed reply is taken.
    server: ServerFn | None = None
    #: a step that runs only when this says so; otherwise it is recorded as skipped (a
    #: migration stops and starts a machine only if it was running)
    when: WhenFn | None = None
    #: False for an agent step that must not be asked twice while the first may still run
    #: (a stream whose one-time token the first send spends): it waits its whole timeout
    #: for the reply instead of being sent again every resend interval
    resend: bool = True
    #: an agent step whose reply is late but whose work is seen going on (a stream's
    #: progress): the sweep gives it ``timeout`` seconds more instead of failing it (the
    #: workflow's own timeout still ends it)
    alive: WhenFn | None = None

    def __post_init__(self) -> None:
        if self.own_turn and self.run is None:
            raise ValueError(f"step {self.name}: only a local step may have its own turn")
        if self.joins_previous and (self.server is not None or self.when is not None):
            raise ValueError(f"step {self.name}: a step sent with the one before goes where "
                             "it goes, always")

    @property
    def is_agent(self) -> bool:
        return self.agent_op is not None


@dataclass(frozen=True)
class Workflow:
    name: str
    chain: tuple[Step, ...]
    onerror: tuple[Step, ...] = ()
    timeout: float = 3600.0

    def __post_init__(self) -> None:
        for steps in (self.chain, self.onerror):
            # a step's retries are counted by its name
            names = [s.name for s in steps]
            if len(set(names)) != len(names):
                raise ValueError(f"workflow {self.name}: two steps share a name")
            for before, step in zip(steps, steps[1:], strict=False):
                if step.joins_previous and before.when is not None:
                    raise ValueError(f"workflow {self.name}: step {step.name} joins a step "
                                     "that may be skipped")

    def steps(self, phase: str) -> tuple[Step, ...]:
        return self.chain if phase == "chain" else self.onerror


REGISTRY: dict[str, Workflow] = {}


def register(workflow: Workflow) -> Workflow:
    REGISTRY[workflow.name] = workflow
    return workflow


def workflow_of(job: Job) -> Workflow:
    return REGISTRY[job.name]


def phase_steps(job: Job) -> tuple[Step, ...]:
    """The steps of the phase the job is in (its chain, or its onerror chain)."""
    return REGISTRY[job.name].steps(job.phase)


def phase_results(job: Job) -> list[dict[str, Any]]:
    """The step records of the phase the job is in, oldest first."""
    return job.chain_results if job.phase == "chain" else job.onerror_results


def current_step(job: Job) -> Step:
    return phase_steps(job)[job.step_index]


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


def savepoint(session: Session, step: Step) -> AbstractContextManager[Any]:
    """Where a failing step's writes are rolled back to, unless it needs none."""
    return session.begin_nested() if step.savepoint else nullcontext()


def describe(exc: Exception) -> tuple[str, str]:
    """The (code, message) a step's exception is recorded with."""
    if isinstance(exc, StepFailed):
        return exc.code, exc.message
    log.error("step raised an unexpected error:\n%s", traceback.format_exc())
    return "InternalError", f"{type(exc).__name__}: {exc}"
