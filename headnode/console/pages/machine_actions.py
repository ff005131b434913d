"""A machine's actions: start, stop, reboot, resize, snapshot, delete. Each starts a job
through the service the APIs call; the answer is a redirect to the machine's page with a
flash naming the job (PRG), or the page again with why it was refused (its 4xx status)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import flash, redirect, request, url_for
from markupsafe import Markup

from headnode.console import blueprint
from headnode.console.pages.machines import InputError, render_machine, visible_machine
from headnode.console.viewer import Viewer, service_context, signed_in
from headnode.services import machines, snapshots
from headnode.services.errors import ServiceError

#: what each power action's button says it did
POWER = {"start": "Start", "stop": "Stop", "reboot": "Reboot"}


def job_link(job_uuid: str) -> str:
    # a plain path: the jobs page is another module's, and this page must not need it
    return f"/console/jobs/{job_uuid}"


def started(what: str, job_uuid: str) -> Markup:
    return Markup('{} started: job <a href="{}">{}</a>.').format(what, job_link(job_uuid),
                                                                 job_uuid)


def _run(viewer: Viewer, machine_uuid: str, what: str,
         start: Callable[[], dict[str, Any]]) -> Any:
    """Check the viewer may touch the machine (404 otherwise, nothing started), start the
    job, and send the browser back to the machine's page."""
    visible_machine(viewer, machine_uuid)
    try:
        answer = start()
    except (ServiceError, InputError) as exc:
        status = exc.status if isinstance(exc, ServiceError) else 422
        return render_machine(viewer, machine_uuid, exc, status, dict(request.form))
    flash(started(what, answer["job_uuid"]), "success")
    # the machine's page even after a delete: it stays there until the job has destroyed it
    return redirect(url_for("console.machine_page", machine_uuid=machine_uuid), code=303)


def _field(name: str) -> str:
    value = request.form.get(name, "").strip()
    if not value:
        raise InputError(name, "is required")
    return value


@blueprint.post("/machines/<machine_uuid>/power")
@signed_in
def machine_power(viewer: Viewer, machine_uuid: str) -> Any:
    action = request.form.get("action", "")

    def start() -> dict[str, Any]:
        if action not in POWER:
            raise InputError("action", f"must be one of {', '.join(POWER)}")
        return machines.machine_action(service_context(), machine_uuid, action,
                                       viewer.caller())
    return _run(viewer, machine_uuid, POWER.get(action, "Action"), start)


@blueprint.post("/machines/<machine_uuid>/resize")
@signed_in
def machine_resize(viewer: Viewer, machine_uuid: str) -> Any:
    return _run(viewer, machine_uuid, "Resize", lambda: machines.resize_machine(
        service_context(), machine_uuid, _field("package"), viewer.caller()))


@blueprint.post("/machines/<machine_uuid>/snapshot")
@signed_in
def machine_snapshot(viewer: Viewer, machine_uuid: str) -> Any:
    return _run(viewer, machine_uuid, "Snapshot", lambda: snapshots.create_snapshot(
        service_context(), machine_uuid, _field("name"), viewer.caller()))


@blueprint.post("/machines/<machine_uuid>/delete")
@signed_in
def machine_delete(viewer: Viewer, machine_uuid: str) -> Any:
    return _run(viewer, machine_uuid, "Delete", lambda: machines.destroy_machine(
        service_context(), machine_uuid, viewer.caller()))


#: what may be done with one snapshot: (service, what the flash says it did)
SNAPSHOT_ACTIONS = {"rollback": (snapshots.rollback_snapshot, "Rollback to"),
                    "delete": (snapshots.delete_snapshot, "Delete of snapshot")}


@blueprint.post("/machines/<machine_uuid>/snapshots/<name>")
@signed_in
def machine_snapshot_action(viewer: Viewer, machine_uuid: str, name: str) -> Any:
    action = request.form.get("action", "")

    def start() -> dict[str, Any]:
        if action not in SNAPSHOT_ACTIONS:
            raise InputError("action", f"must be one of {', '.join(SNAPSHOT_ACTIONS)}")
        return SNAPSHOT_ACTIONS[action][0](service_context(), machine_uuid, name,
                                           viewer.caller())
    what = SNAPSHOT_ACTIONS.get(action, (None, "Snapshot action"))[1]
    return _run(viewer, machine_uuid, f"{what} {name}", start)
