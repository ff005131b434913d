"""Migrations: Migrate (``POST /machines/:id/migrate``), its estimate, ListMigrations and
GetMigration (``/migrations[/:machine]``), as ``triton inst migration ...`` calls them.

Migrate takes ``action`` (and, for begin and automatic, ``affinity``) from the query string,
a form or a JSON body. A phase's action answers 201 with the migration as CloudAPI shows it;
``estimate`` answers 200 with ``{size, eta_ms, transfer_bytes_second}``; ``watch`` answers
200 with a stream of JSON lines (``application/x-json-stream``): a ``progress`` event per
step the migration records and per change of the bytes sent, then one ``end`` event with
the phase and the state it ended in (the stream ends there). A tenant may migrate only when
the operator allows it (``SDC_USER_MIGRATION_ALLOWED``; 403 otherwise); another account's
machine is 404, as everywhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify

from headnode.api.cloudapi.common import body_or_query, ctx, job_caller, tenant
from headnode.services import jobs, migrations
from headnode.services import tenant as tenant_service
from headnode.services.context import ServiceContext
from headnode.services.errors import NotFound
from schemas.cloudapi import MigrateRequest, load
from schemas.ops import JOB_FINISHED

blp = Blueprint("cloudapi_migrations", __name__)

STREAM_TYPE = "application/x-json-stream"
#: how often a watch reads the migration again
WATCH_INTERVAL = 0.5
#: a phase whose job ended while the record still says running is over (the job's error
#: steps record the state; this is for a worker that died before they could)
STALE_AFTER = 10.0


@blp.post("/machines/<uuid>/migrate")
def migrate(uuid: str) -> Any:
    params = load(MigrateRequest(), body_or_query())
    owner = tenant().uuid
    tenant_service.owned_machine(ctx(), uuid, owner)
    action = params["action"]
    if action == "estimate":
        return jsonify(migrations.estimate(ctx(), uuid, owner_uuid=owner))
    if action == "watch":
        first = migrations.get_migration(ctx(), uuid, owner_uuid=owner)
        return Response(watch_lines(ctx(), uuid, owner, first), status=200,
                        content_type=STREAM_TYPE)
    migrations.migrate(ctx(), uuid, action, caller=job_caller(), owner_uuid=owner,
                       affinity=params.get("affinity"))
    return jsonify(shown(migrations.get_migration(ctx(), uuid, owner_uuid=owner))), 201


@blp.get("/machines/<uuid>/migrate")
def migrate_estimate(uuid: str) -> Any:
    """CloudAPI's MigrateMachineEstimate: the same answer as ``action=estimate``."""
    owner = tenant().uuid
    tenant_service.owned_machine(ctx(), uuid, owner)
    return jsonify(migrations.estimate(ctx(), uuid, owner_uuid=owner))


@blp.get("/migrations")
def list_migrations() -> Any:
    return jsonify([shown(m)
                    for m in migrations.list_migrations(ctx(), owner_uuid=tenant().uuid)])


@blp.get("/migrations/<uuid>")
def get_migration(uuid: str) -> Any:
    """``uuid`` is the machine's (CloudAPI names a migration by its machine): its newest."""
    return jsonify(shown(migrations.get_migration(ctx(), uuid, owner_uuid=tenant().uuid)))


def shown(m: Any) -> dict[str, Any]:
    """The migration as CloudAPI shows it, with the durations ``triton inst migration get``
    prints (it requires one on every step): each step's, and the whole migration's once it
    has finished."""
    migration = migrations.migration_to_cloudapi(m)
    for event in migration["progress_history"]:
        event["duration_ms"] = milliseconds_between(event.get("started_timestamp"),
                                                    event.get("finished_timestamp"))
    if migration.get("finished_timestamp"):
        migration["duration_ms"] = milliseconds_between(migration.get("created_timestamp"),
                                                        migration["finished_timestamp"])
    return migration


def milliseconds_between(start: Any, end: Any) -> int:
    """From one ISO time to another (0 when either is missing or unreadable)."""
    try:
        began, ended = datetime.fromisoformat(str(start)), datetime.fromisoformat(str(end))
    except ValueError:
        return 0
    return max(0, int((ended - began).total_seconds() * 1000))


# --------------------------------------------------------------------------- watch


def watch_lines(service: ServiceContext, machine_uuid: str, owner: str,
                first: Any) -> Iterator[str]:
    """The migration's events as JSON lines until its phase has ended: the steps recorded
    since the watch began (all of them when it has ended already), the bytes sent as they
    grow, and the ``end`` event."""
    seen = 0
    last_bytes: tuple[Any, ...] | None = None
    current, stale_since = first, None
    while True:
        history = list(current.progress_history or [])
        for event in history[seen:]:
            yield line(step_event(event))
        seen = len(history)
        sent = (current.sent_bytes, current.total_bytes, current.rate_bps)
        if current.state == "running" and current.sent_bytes and sent != last_bytes:
            last_bytes = sent
            yield line(bytes_event(current))
        if current.state != "running":
            yield line(end_event(current))
            return
        stale_since = job_over_since(service, current.job_uuid, stale_since)
        if stale_since is not None and time.monotonic() - stale_since > STALE_AFTER:
            yield line(end_event(current))
            return
        time.sleep(WATCH_INTERVAL)
        try:
            current = migrations.get_migration(service, machine_uuid, owner_uuid=owner)
        except NotFound:  # the machine was destroyed meanwhile
            yield line(end_event(current))
            return


def job_over_since(service: ServiceContext, job_uuid: str | None,
                   since: float | None) -> float | None:
    """When this watch first saw the phase's job over (None while it runs)."""
    if job_uuid is None:
        return since
    try:
        execution = jobs.get_job(service, job_uuid).get("execution")
    except NotFound:
        return since
    if execution not in JOB_FINISHED:
        return None
    return since if since is not None else time.monotonic()


def line(event: dict[str, Any]) -> str:
    return json.dumps(event) + "\n"


def step_event(event: dict[str, Any]) -> dict[str, Any]:
    """A recorded step (``{phase, state, message, bytes, total_bytes, at}``) as CloudAPI's
    progress event: a step without bytes counts as done (1 of 1; not 100 of 100, which
    triton's watcher adds up from one step to the next as percents of the phase)."""
    shown: dict[str, Any] = {"type": "progress", "phase": event.get("phase"),
                             "state": event.get("state") or "running",
                             "message": event.get("message") or ""}
    if event.get("bytes") is not None:
        shown["current_progress"] = event["bytes"]
        shown["total_progress"] = event.get("total_bytes") or event["bytes"] or 1
    else:
        shown["current_progress"], shown["total_progress"] = 1, 1
    return shown


def bytes_event(m: Any) -> dict[str, Any]:
    """The sync's bytes so far, its rate and what is left at that rate."""
    total = max(m.total_bytes or 0, m.sent_bytes)
    shown: dict[str, Any] = {"type": "progress", "phase": m.phase, "state": "running",
                             "current_progress": m.sent_bytes, "total_progress": total or 1}
    if m.rate_bps:
        shown["transfer_bytes_second"] = m.rate_bps
        shown["eta_ms"] = int((total - m.sent_bytes) * 1000 / m.rate_bps)
    return shown


def end_event(m: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {"type": "end", "phase": m.phase, "state": m.state}
    if m.error:
        shown["message"] = m.error.get("message") if isinstance(m.error, dict) else str(m.error)
    return shown
