"""Servers (operators only): the table (status, heartbeat age, utilization, traits, flags,
actions), a server's page (its machines, sysinfo, capacity and what fits of each package),
the flags an operator sets (set up, reserved, maintenance) and a new node's setup over SSH
(a ``server_setup`` job, as ``POST /ops/servers/setup`` starts it)."""

from __future__ import annotations

import time
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from marshmallow import ValidationError

from headnode.console import blueprint, charts, nav_entry
from headnode.console.pages.dashboard import use_charts
from headnode.console.pages.machine_actions import started
from headnode.console.pages.machines import (
    BAD_INPUT,
    PER_PAGE,
    InputError,
    Pager,
    page_link,
    page_number,
)
from headnode.console.viewer import Viewer, operators_only, service_context
from headnode.services import fleet, machines, node_setup, placement, planning, servers
from headnode.services.errors import NotFound, ServiceError
from headnode.store.models import Server
from schemas.node_setup import ServerSetupRequest
from schemas.ops import SERVER_STATUSES

#: the flag changes the servers' buttons send: (button's value) -> (changes, what it did)
FLAG_CHANGES: dict[str, tuple[dict[str, bool], str]] = {
    "setup": ({"setup": True}, "set up"),
    "maintenance-on": ({"maintenance": True}, "in maintenance"),
    "maintenance-off": ({"maintenance": False}, "out of maintenance"),
    "reserve": ({"reserved": True}, "reserved"),
    "unreserve": ({"reserved": False}, "no longer reserved"),
}
#: resource on a server row: label, (total, provisioned, in flight) columns, unit
METERS = (("RAM", ("ram_mb", "ram_committed_mb", "ram_inflight_mb"), "MiB"),
          ("Disk", ("disk_mb", "disk_committed_mb", "disk_inflight_mb"), "MiB"))

nav_entry("servers_page", "Servers", operators=True)


def heartbeat_age(server: Server, now: float) -> str:
    if not server.last_heartbeat:
        return "never"
    seconds = max(0, int(now - server.last_heartbeat))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def meters(server: Server) -> list[tuple[str, Any, int]]:
    """(label, bar, share used in percent) for each resource of the row."""
    shown = []
    for label, (total_col, *used_cols), unit in METERS:
        total, used = getattr(server, total_col), sum(getattr(server, c) for c in used_cols)
        shown.append((label, charts.meter(label, used, total, unit),
                      round(100 * used / total) if total else 0))
    return shown


def _status_filter() -> str:
    status = request.args.get("status", "")
    if status and status not in SERVER_STATUSES:
        raise InputError("status", f"must be one of {', '.join(SERVER_STATUSES)}")
    return status


@blueprint.get("/servers")
@operators_only
def servers_page(viewer: Viewer) -> Any:
    rows: list[Server] = []
    status, number, error, code = "", 1, None, 200
    try:
        number, status = page_number(), _status_filter()
        rows = servers.list_servers(service_context(), status=status or None)
    except InputError as exc:
        error, code = exc, BAD_INPUT
    pager = Pager(number, len(rows))
    shown = rows[pager.offset:pager.offset + PER_PAGE]
    now = time.time()
    return render_template(
        "console/servers.html", viewer=viewer, error=error, status=status,
        statuses=SERVER_STATUSES, pager=pager, page_url=page_link("console.servers_page"),
        rows=[(s, heartbeat_age(s, now), meters(s)) for s in shown],
        back=request.full_path, setup_values={}), code


def _capacity(server: Server) -> tuple[bool, list[charts.Chart], list[dict[str, Any]]]:
    """Whether the server takes machines, its use per resource as the capacity report
    parts it, and how many more machines of each active package it takes now. Computed for
    this server alone: a fleet's report reads every server."""
    ctx = service_context()
    state, policy = fleet.state_of(server), placement.policy_for(ctx)
    report = planning.server_report(server, state, policy)
    pipeline = planning.simulation_pipeline(ctx)
    with ctx.read() as session:
        packages = planning.active_packages(session)
    fits = [{"name": p.name, "memory": p.memory, "disk": p.disk,
             "fits": planning.fits([state], placement.build_request(p, None), policy,
                                   pipeline)} for p in packages]
    return report["placeable"], use_charts(report), fits


@blueprint.get("/servers/<server_uuid>")
@operators_only
def server_page(viewer: Viewer, server_uuid: str) -> Any:
    ctx = service_context()
    try:
        server = servers.get_server(ctx, server_uuid)
        number = page_number()
    except NotFound:
        abort(404)
    except InputError as exc:
        abort(BAD_INPUT, exc.message)
    placeable, use, fits = _capacity(server)
    rows, total = machines.list_machines(ctx, limit=PER_PAGE, offset=(number - 1) * PER_PAGE,
                                         server_uuid=server.uuid)
    return render_template(
        "console/server.html", viewer=viewer, s=server, placeable=placeable, use=use,
        fits=fits, machines=rows, pager=Pager(number, total),
        page_url=page_link("console.server_page", server_uuid=server.uuid),
        heartbeat=heartbeat_age(server, time.time()), back=request.full_path)


def _back() -> str:
    """Where a flag change returns: the servers' page it was sent from."""
    back = request.form.get("back", "")
    return back if back.startswith("/console/servers") else url_for("console.servers_page")


@blueprint.post("/servers/<server_uuid>/flags")
@operators_only
def server_flags(viewer: Viewer, server_uuid: str) -> Any:
    change = FLAG_CHANGES.get(request.form.get("change", ""))
    if change is None:
        abort(BAD_INPUT, "change: not a change the console makes")
    changes, done = change
    try:
        server = servers.update_server(service_context(), server_uuid, changes)
    except NotFound:
        abort(404)
    flash(f"{server.hostname}: {done}.", "success")
    return redirect(_back(), code=303)


@blueprint.post("/servers/setup")
@operators_only
def server_setup(viewer: Viewer) -> Any:
    """A new node, set up over SSH: the ``server_setup`` job (it must let in the head
    node's key, ``sdc server ssh-key``)."""
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    body: dict[str, Any] = {k: v for k, v in values.items()
                            if k in ("host", "port", "user", "backend") and v}
    if str(body.get("port", "")).isdigit():  # a form sends text; the schema wants a number
        body["port"] = int(body["port"])
    body["accept_new_host_key"] = values.get("accept_new_host_key") == "yes"
    try:
        answer = node_setup.start_setup(service_context(), ServerSetupRequest().load(body),
                                        viewer.caller())
    except ValidationError as exc:
        field = next(iter(exc.messages_dict))
        return _setup_refused(viewer, InputError(field, str(exc.messages_dict[field][0])),
                              BAD_INPUT, values)
    except ServiceError as exc:
        return _setup_refused(viewer, exc, exc.status, values)
    flash(started(f"Setup of {answer['host']}", answer["job_uuid"]), "success")
    return redirect(url_for("console.servers_page"), code=303)


def _setup_refused(viewer: Viewer, error: InputError | ServiceError, status: int,
                   values: dict[str, str]) -> Any:
    rows = servers.list_servers(service_context())
    pager = Pager(1, len(rows))
    now = time.time()
    return render_template(
        "console/servers.html", viewer=viewer, error=None, setup_error=error, status="",
        statuses=SERVER_STATUSES, pager=pager, page_url=page_link("console.servers_page"),
        rows=[(s, heartbeat_age(s, now), meters(s)) for s in rows[:PER_PAGE]],
        back=url_for("console.servers_page"), setup_values=values), status
