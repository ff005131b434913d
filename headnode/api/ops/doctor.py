"""``/ops/doctor``: the records against every node's truth (headnode.services.doctor)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import operator_caller, service_context
from headnode.services import doctor
from schemas.ops import DoctorQuery, DoctorReport, OrphanPurge, OrphanPurgeJob

blp = Blueprint("doctor", __name__, url_prefix="/ops/doctor",
                description="Orphans, missing machines, drift, leaks and stuck jobs")


@blp.route("")
class Doctor(MethodView):
    @blp.arguments(DoctorQuery, location="query")
    @blp.response(200, DoctorReport)
    def get(self, query: dict[str, Any]) -> Any:
        """What is wrong; changes nothing."""
        return doctor.doctor(service_context(), stuck_after=query["stuck_after"])


@blp.route("/repair")
class DoctorRepair(MethodView):
    @blp.arguments(DoctorQuery, location="query")
    @blp.response(200, DoctorReport)
    def post(self, query: dict[str, Any]) -> Any:
        """Fix records and release leaks (findings with `repair`); never destroys a machine
        on a node. Returns the findings as found, with `repaired` set on those fixed."""
        return doctor.doctor(service_context(), repair_too=True,
                             stuck_after=query["stuck_after"])


@blp.route("/purge")
class DoctorPurge(MethodView):
    @blp.arguments(OrphanPurge)
    @blp.response(202, OrphanPurgeJob)
    @blp.alt_response(404, description="no such server")
    @blp.alt_response(409, description="not an orphan on that server (NotAnOrphan)")
    def post(self, body: dict[str, Any]) -> Any:
        """Destroy an orphan (a machine the records do not have on that node) on its node:
        starts a `purge_orphan` job."""
        return doctor.purge_orphan(service_context(), str(body["server_uuid"]),
                                   str(body["machine_uuid"]), operator_caller())
