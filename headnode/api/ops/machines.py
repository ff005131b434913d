from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from headnode.api.ops import operator_caller, service_context
from headnode.services import machines, snapshots
from schemas.ops import (
    Machine,
    MachineAction,
    MachineCreate,
    MachineJob,
    MachineListQuery,
    Snapshot,
    SnapshotCreate,
    SnapshotJob,
)

blp = Blueprint("machines", __name__, url_prefix="/ops/machines",
                description="Machines: provision, start, stop, reboot, destroy")

RESOURCE_COUNT = {"x-resource-count": {"description": "machines matching the filters",
                                       "schema": {"type": "integer"}}}


@blp.route("")
class Machines(MethodView):
    @blp.arguments(MachineListQuery, location="query")
    @blp.response(200, Machine(many=True), headers=RESOURCE_COUNT)
    def get(self, query: dict[str, Any]) -> Any:
        rows, total = machines.list_machines(service_context(), **query)
        return rows, {"x-resource-count": str(total)}

    @blp.arguments(MachineCreate)
    @blp.response(202, Machine)
    def post(self, body: dict[str, Any]) -> Any:
        """Allocate a server and start the provision job; the answer carries ``job_uuid``."""
        if "server_uuid" in body:
            body["server_uuid"] = str(body["server_uuid"])
        return machines.create_machine(service_context(), body, operator_caller())


@blp.route("/<uuid>")
class MachineByUuid(MethodView):
    @blp.response(200, Machine)
    def get(self, uuid: str) -> Any:
        return machines.get_machine(service_context(), uuid)

    @blp.arguments(MachineAction, location="query")
    @blp.response(202, MachineJob)
    def post(self, query: dict[str, Any], uuid: str) -> Any:
        """start, stop, reboot; resize (``&package=``), rename (``&alias=``)."""
        action, ctx, caller = query["action"], service_context(), operator_caller()
        if action == "resize":
            return machines.resize_machine(ctx, uuid, query["package"], caller)
        if action == "rename":
            return machines.rename_machine(ctx, uuid, query["alias"], caller)
        return machines.machine_action(ctx, uuid, action, caller)

    @blp.response(202, MachineJob)
    def delete(self, uuid: str) -> Any:
        return machines.destroy_machine(service_context(), uuid, operator_caller())


@blp.route("/<uuid>/snapshots")
class MachineSnapshots(MethodView):
    @blp.response(200, Snapshot(many=True))
    def get(self, uuid: str) -> Any:
        return snapshots.list_snapshots(service_context(), uuid)

    @blp.arguments(SnapshotCreate)
    @blp.response(202, SnapshotJob)
    def post(self, body: dict[str, Any], uuid: str) -> Any:
        """Snapshot the machine's dataset on its node (a job)."""
        return snapshots.create_snapshot(service_context(), uuid, body["name"],
                                         operator_caller())


@blp.route("/<uuid>/snapshots/<name>")
class MachineSnapshot(MethodView):
    @blp.response(200, Snapshot)
    def get(self, uuid: str, name: str) -> Any:
        return snapshots.get_snapshot(service_context(), uuid, name)

    @blp.response(202, MachineJob)
    def post(self, uuid: str, name: str) -> Any:
        """Roll the machine back to this snapshot (a job)."""
        return snapshots.rollback_snapshot(service_context(), uuid, name, operator_caller())

    @blp.response(202, MachineJob)
    def delete(self, uuid: str, name: str) -> Any:
        return snapshots.delete_snapshot(service_context(), uuid, name, operator_caller())
