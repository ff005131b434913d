"""Which jobs a viewer sees. Operators see every job. A tenant sees the jobs of their own
machines (destroyed ones too), as CloudAPI's machine audit decides; any other job is a 404,
as if it did not exist. Also the dashboard's share: the newest jobs, the day's failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort
from sqlalchemy import select

from headnode.console.pages.catalog_common import PER_PAGE
from headnode.console.viewer import Viewer, service_context
from headnode.services import jobs
from headnode.services import tenant as tenant_service
from headnode.services.context import ServiceContext
from headnode.services.errors import NotFound
from headnode.services.resolve import is_uuid
from headnode.store.models import Job, Machine

RECENT = 10
FAILURES_SINCE = timedelta(hours=24)


def visible_jobs(ctx: ServiceContext, viewer: Viewer, *, execution: str | None = None,
                 machine_uuid: str | None = None, limit: int = PER_PAGE,
                 offset: int = 0) -> list[dict[str, Any]]:
    """Newest first: every job for an operator, else the jobs of the tenant's machines."""
    if viewer.is_operator:
        return jobs.list_jobs(ctx, machine_uuid=machine_uuid, execution=execution,
                              limit=limit, offset=offset)
    owned = select(Machine.uuid).where(Machine.owner_uuid == viewer.account_uuid)
    query = select(Job).where(Job.machine_uuid.in_(owned))
    if machine_uuid is not None:
        query = query.where(Job.machine_uuid == machine_uuid)
    if execution is not None:
        query = query.where(Job.execution == execution)
    query = (query.order_by(Job.created_at.desc(), Job.uuid)
             .limit(min(max(limit, 1), jobs.MAX_PAGE)).offset(max(offset, 0)))
    with ctx.read() as session:
        return [jobs.job_to_dict(job) for job in session.scalars(query)]


def visible_job(ctx: ServiceContext, viewer: Viewer, uuid: str) -> dict[str, Any]:
    """The job, if the viewer may see it; else a 404 (another tenant's is not there)."""
    if not is_uuid(uuid):
        abort(404)
    try:
        job = jobs.get_job(ctx, uuid)
    except NotFound:
        abort(404)
    if not viewer.is_operator and not owns_machine(ctx, viewer, job["machine_uuid"]):
        abort(404)
    return job


def owns_machine(ctx: ServiceContext, viewer: Viewer, machine_uuid: str | None) -> bool:
    if not machine_uuid:
        return False  # server and image jobs are the operators'
    try:
        tenant_service.owned_machine(ctx, machine_uuid, viewer.account_uuid)
        return True
    except NotFound:
        return tenant_service.destroyed_machine(ctx, machine_uuid,
                                                viewer.account_uuid) is not None


def recent_jobs(viewer: Viewer) -> dict[str, list[dict[str, Any]]]:
    """For the dashboard: the newest jobs, and the jobs that failed in the last day."""
    ctx = service_context()
    since = datetime.now(UTC) - FAILURES_SINCE
    failed = visible_jobs(ctx, viewer, execution="failed", limit=PER_PAGE)
    return {"recent": visible_jobs(ctx, viewer, limit=RECENT),
            "failures": [j for j in failed
                         if j["finished_at"] is not None and j["finished_at"] >= since]}
