from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import operator_caller, service_context
from headnode.services import jobs
from schemas.ops import Job, JobListQuery

blp = Blueprint("jobs", __name__, url_prefix="/ops/jobs",
                description="Workflow jobs and their step results")


@blp.route("")
class Jobs(MethodView):
    @blp.arguments(JobListQuery, location="query")
    @blp.response(200, Job(many=True))
    def get(self, query: dict[str, Any]) -> Any:
        """Newest first."""
        return jobs.list_jobs(service_context(), **query)


@blp.route("/<uuid>")
class JobByUuid(MethodView):
    @blp.response(200, Job)
    def get(self, uuid: str) -> Any:
        return jobs.get_job(service_context(), uuid)


@blp.route("/<uuid>/cancel")
class JobCancel(MethodView):
    @blp.response(202, Job)
    @blp.alt_response(404, description="no such job")
    @blp.alt_response(409, description="the job has already ended (JobFinished)")
    def post(self, uuid: str) -> Any:
        """Stop a queued or running job at its next step boundary and run its onerror
        chain; it ends `canceled`. Asking again is harmless."""
        return jobs.cancel_job(service_context(), uuid, operator_caller())
