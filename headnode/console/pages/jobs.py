"""Jobs: a list (newest first, paginated), and a job's page with its step timeline, which
``static/job.js`` keeps up to date from ``/console/jobs/<uuid>.json`` while the job runs.

Who sees which job: ``job_scope``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import abort, jsonify, render_template, request

from headnode.console import blueprint, nav_entry
from headnode.console.pages.catalog_common import PER_PAGE, page_number, page_probed
from headnode.console.pages.job_scope import owns_machine, visible_job, visible_jobs
from headnode.console.pages.job_timeline import human_duration, timeline, to_json
from headnode.console.viewer import Viewer, service_context, signed_in
from headnode.services.resolve import is_uuid
from schemas.ops import JOB_EXECUTIONS

nav_entry("jobs", "Jobs")


@blueprint.app_template_filter("duration")
def _duration(seconds: float | None) -> str:
    return human_duration(seconds)


@blueprint.app_template_filter("when")
def _when(value: datetime | None) -> str:
    """A time as people read it, in UTC (a <time> element's datetime keeps the ISO form)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _execution_filter() -> str | None:
    wanted = request.args.get("execution") or None
    if wanted is not None and wanted not in JOB_EXECUTIONS:
        abort(400, description=f"execution: one of {', '.join(JOB_EXECUTIONS)}")
    return wanted


def _machine_filter(viewer: Viewer) -> str | None:
    """``?machine=``: one machine's jobs (a tenant's own machine, else a 404)."""
    wanted = request.args.get("machine") or None
    if wanted is None:
        return None
    if not is_uuid(wanted):
        abort(400, description="machine: a machine's uuid")
    if not viewer.is_operator and not owns_machine(service_context(), viewer, wanted):
        abort(404)
    return wanted


@blueprint.get("/jobs", endpoint="jobs")
@signed_in
def jobs_page(viewer: Viewer) -> Any:
    number, execution, machine = page_number(), _execution_filter(), _machine_filter(viewer)
    rows = visible_jobs(service_context(), viewer, execution=execution, machine_uuid=machine,
                        limit=PER_PAGE + 1, offset=(number - 1) * PER_PAGE)
    filters = {k: v for k, v in (("execution", execution), ("machine", machine)) if v}
    return render_template("console/jobs.html", pager=page_probed(rows, number),
                           execution=execution, machine=machine, filters=filters,
                           executions=JOB_EXECUTIONS)


@blueprint.get("/jobs/<uuid>")
@signed_in
def job(viewer: Viewer, uuid: str) -> Any:
    found = visible_job(service_context(), viewer, uuid)
    return render_template("console/job.html", job=found, timeline=timeline(found))


@blueprint.get("/jobs/<uuid>.json")
@signed_in
def job_json(viewer: Viewer, uuid: str) -> Any:
    """The timeline as data, with its table rendered as on the page (job.js swaps it in,
    so the page and its updates are drawn by one template)."""
    found = visible_job(service_context(), viewer, uuid)
    current = timeline(found)
    answer = to_json(current)
    answer["uuid"] = found["uuid"]
    answer["html"] = render_template("console/_job_timeline.html", job=found,
                                     timeline=current)
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response
