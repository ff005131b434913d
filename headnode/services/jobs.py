"""Workflow jobs as the operator reads them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, NotFound
from headnode.store.models import Job, utcnow
from schemas.ops import JOB_FINISHED
from workflows.engine import cancel_refusal

MAX_PAGE = 1000


def job_to_dict(job: Job) -> dict[str, Any]:
    """The job as the API shows it. The step names of its chain and onerror chain are put
    in ``params`` by whoever creates the job, so a job shows the workflow it was made with."""
    params = job.params or {}
    return {
        "uuid": job.uuid,
        "name": job.name,
        "machine_uuid": job.machine_uuid,
        "server_uuid": job.server_uuid,
        "owner_uuid": job.owner_uuid,
        "execution": job.execution,
        "phase": job.phase,
        "chain": list(params.get("chain", [])),
        "onerror": list(params.get("onerror", [])),
        "chain_results": list(job.chain_results or []),
        "onerror_results": list(job.onerror_results or []),
        "error": job.error,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "cancel_requested_at": job.cancel_requested_at,
        "canceled_by": job.canceled_by,
        "params": params,
    }


def list_jobs(
    ctx: ServiceContext,
    machine_uuid: str | None = None,
    execution: str | None = None,
    name: str | None = None,
    limit: int = MAX_PAGE,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest first."""
    query = select(Job).order_by(Job.created_at.desc(), Job.uuid)
    if machine_uuid is not None:
        query = query.where(Job.machine_uuid == machine_uuid)
    if execution is not None:
        query = query.where(Job.execution == execution)
    if name is not None:
        query = query.where(Job.name == name)
    query = query.limit(min(max(limit, 1), MAX_PAGE)).offset(max(offset, 0))
    with ctx.read() as session:
        return [job_to_dict(job) for job in session.scalars(query)]


def get_job(ctx: ServiceContext, uuid: str) -> dict[str, Any]:
    with ctx.read() as session:
        job = session.get(Job, uuid)
        if job is None:
            raise NotFound("job", uuid)
        return job_to_dict(job)


def cancel_job(ctx: ServiceContext, uuid: str, caller: dict[str, Any]) -> dict[str, Any]:
    """Ask a queued or running job to stop at its next step boundary and run its onerror
    chain (the workflow worker does that, told after the commit). Asking again changes
    nothing: the first request's time and caller stay. A job that has ended, or has started
    and has no onerror chain (``cancel_refusal``), is a Conflict."""
    with ctx.transaction() as session:
        # The lock waits for a workflow turn under way: the job is then between two steps.
        job = session.get(Job, uuid, with_for_update=True)
        if job is None:
            raise NotFound("job", uuid)
        if job.execution in JOB_FINISHED:
            raise Conflict(f"job {uuid} has already ended ({job.execution}); only a queued "
                           f"or running job can be canceled", code="JobFinished",
                           execution=job.execution)
        refusal = cancel_refusal(job)
        if refusal is not None:
            raise Conflict(f"job {uuid} cannot be canceled: {refusal}", code="JobNotCancelable")
        if job.cancel_requested_at is None:
            job.cancel_requested_at = utcnow()
            job.canceled_by = dict(caller)
        answer = job_to_dict(job)
    if ctx.jobs is not None:
        ctx.jobs.cancel(uuid)
    return answer
