"""Migrating machines between servers: start a phase (begin, sync, switch, automatic, abort,
finalize, rollback), estimate one, list and read migrations, and their API shapes.

Each action is a job on the machine (its lock, as every change: services.machines) whose
workflow is ``migrate_<action>`` (workflows/migrations.py). Begin and automatic pick the
target now, in the request, as a create does: placement over the fleet without the source
(or only the operator's ``target_server``, still checked), and the machine's size held
there in flight (services.migration_room). While a machine has an unfinished migration
(``finished_at`` null, until finalize, rollback, abort or a failure), only the migration's
own jobs may change it (services.machines' MachineMigrating guard).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from headnode.services import fleet, migration_room, placement
from headnode.services.context import ServiceContext
from headnode.services.errors import (
    Conflict,
    InsufficientCapacity,
    InvalidArgument,
    NotFound,
    ServiceError,
)
from headnode.services.machines import CHANGEABLE, load_machine, start_machine_job
from headnode.services.placement import pipeline_for, policy_for
from headnode.services.resolve import is_uuid
from headnode.store.models import (
    Image,
    Machine,
    Migration,
    Network,
    Nic,
    Package,
    Server,
    new_uuid,
)
from workflows.params import MigrationParams

ACTIONS = ("begin", "sync", "switch", "automatic", "abort", "finalize", "rollback")
#: the actions that start a migration (and place its target)
STARTING = ("begin", "automatic")
#: (migration states, phases) each other action may start from, and why not otherwise
ALLOWED: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "sync": (("paused",), ("begin", "sync"), "sync follows begin or sync"),
    "switch": (("paused",), ("sync",), "switch needs a finished sync first"),
    "abort": (("paused",), ("begin", "sync"), "abort is for a migration not switched yet "
                                              "(after a switch: rollback)"),
    "finalize": (("successful",), ("switch",), "finalize follows a switch"),
    "rollback": (("successful",), ("switch",), "rollback follows a switch"),
}
#: the phase an action's job is in from its start (sync and switch: their first step's)
PHASE_OF = {"abort": "abort", "finalize": "finalize", "rollback": "rollback"}
UNFINISHED = Migration.finished_at.is_(None)


class MigrationNotAllowed(ServiceError):
    """A tenant asked while tenants may not migrate (``user_migration_allowed``)."""

    status = 403
    code = "NotAuthorized"


# -- the shapes -----------------------------------------------------------------------------

def _ts(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _cloudapi_event(event: dict[str, Any]) -> dict[str, Any]:
    """One progress event as CloudAPI's progress_history shows it."""
    shaped = {"type": "progress", "phase": event.get("phase"), "state": event.get("state"),
              "message": event.get("message"),
              "started_timestamp": event.get("started_at"),
              "finished_timestamp": event.get("at")}
    if event.get("bytes") is not None:
        shaped["current_progress"] = event["bytes"]
        shaped["total_progress"] = event.get("total_bytes") or event["bytes"]
    return shaped


def migration_to_cloudapi(m: Migration) -> dict[str, Any]:
    """CloudAPI's migration (GetMigration, ListMigrations, Migrate's answer)."""
    return {"machine": m.machine_uuid, "state": m.state, "phase": m.phase,
            "automatic": bool(m.automatic),
            "progress_history": [_cloudapi_event(e) for e in m.progress_history or []],
            "created_timestamp": _ts(m.created_at),
            "finished_timestamp": _ts(m.finished_at),
            **({"error": m.error["message"]} if m.error else {})}


def migration_to_ops(m: Migration) -> dict[str, Any]:
    """The operator's migration: CloudAPI's and the servers, bytes, rate and downtime."""
    return {**migration_to_cloudapi(m), "uuid": m.uuid, "owner_uuid": m.owner_uuid,
            "source_server_uuid": m.source_server_uuid,
            "target_server_uuid": m.target_server_uuid, "job_uuid": m.job_uuid,
            "syncs": m.syncs, "last_snapshot": m.last_snapshot,
            "sent_bytes": m.sent_bytes, "total_bytes": m.total_bytes,
            "rate_bps": m.rate_bps, "downtime_ms": m.downtime_ms, "error": m.error,
            "target_held": m.target_held, "source_held": m.source_held,
            "was_running": m.was_running, "updated_timestamp": _ts(m.updated_at)}


# -- reads ----------------------------------------------------------------------------------

def _owned_machine(session: Session, machine_uuid: str, owner_uuid: str | None) -> Machine:
    machine = load_machine(session, machine_uuid)
    if owner_uuid is not None and machine.owner_uuid != owner_uuid:
        raise NotFound("machine", machine_uuid)
    return machine


def list_migrations(ctx: ServiceContext, owner_uuid: str | None = None,
                    machine_uuid: str | None = None) -> list[Migration]:
    """Migrations, oldest first (an owner's only, with ``owner_uuid``)."""
    query = select(Migration).order_by(Migration.created_at, Migration.uuid)
    if owner_uuid is not None:
        query = query.where(Migration.owner_uuid == owner_uuid)
    if machine_uuid is not None:
        if not is_uuid(machine_uuid):
            return []
        query = query.where(Migration.machine_uuid == machine_uuid)
    with ctx.read() as session:
        return list(session.scalars(query).all())


def get_migration(ctx: ServiceContext, machine_uuid: str,
                  owner_uuid: str | None = None) -> Migration:
    """The machine's newest migration; 404 if there is none (or the machine is not the
    owner's)."""
    with ctx.read() as session:
        found = _newest(session, machine_uuid, owner_uuid)
        if found is None:
            raise NotFound("migration", machine_uuid)
        return found


def _newest(session: Session, machine_uuid: str, owner_uuid: str | None) -> Migration | None:
    if not is_uuid(machine_uuid):
        return None
    query = (select(Migration).where(Migration.machine_uuid == machine_uuid)
             .order_by(Migration.created_at.desc(), Migration.uuid).limit(1))
    if owner_uuid is not None:
        query = query.where(Migration.owner_uuid == owner_uuid)
    return session.scalars(query).first()


def estimate(ctx: ServiceContext, machine_uuid: str,
             owner_uuid: str | None = None) -> dict[str, Any]:
    """How much a migration of the machine would send and how long that would take: its
    disk, at the rate recent migrations measured (else SDC_MIGRATION_ESTIMATE_MBPS)."""
    with ctx.read() as session:
        machine = _owned_machine(session, machine_uuid, owner_uuid)
        size = int(machine.disk_mb) * 1024 * 1024
        rates: list[int] = [r for r in session.scalars(
            select(Migration.rate_bps).where(Migration.rate_bps.is_not(None))
            .order_by(Migration.updated_at.desc()).limit(10)) if r]
    rate = (int(sum(rates) / len(rates)) if rates
            else int(ctx.settings.migration_estimate_mbps * 1024 * 1024))
    rate = max(rate, 1)
    return {"size": size, "transfer_bytes_second": rate, "eta_ms": int(size * 1000 / rate)}


# -- starting a phase -------------------------------------------------------------------------

def _check_caller(ctx: ServiceContext, caller: dict[str, Any], owner_uuid: str | None) -> None:
    tenant = owner_uuid is not None and not caller.get("operator")
    if tenant and not ctx.settings.user_migration_allowed:
        raise MigrationNotAllowed("migrating machines is not allowed for accounts here "
                                  "(the operator's setting user_migration_allowed)")


def migrate(ctx: ServiceContext, machine_uuid: str, action: str, *,
            caller: dict[str, Any], target_server: str | None = None,
            owner_uuid: str | None = None,
            affinity: list[str] | None = None) -> dict[str, Any]:
    """Start ``action`` on the machine's migration; the migration (ops shape) with the
    job's uuid. ``owner_uuid``: a tenant's request (404 for another's machine; 403 while
    tenants may not migrate). ``target_server`` and ``affinity``: begin and automatic
    only."""
    if action not in ACTIONS:
        raise InvalidArgument("action", f"must be one of {', '.join(ACTIONS)}")
    if (target_server or affinity) and action not in STARTING:
        field = "target_server" if target_server else "affinity"
        raise InvalidArgument(field, "only begin and automatic choose a target")
    _check_caller(ctx, caller, owner_uuid)
    parsed = placement.parse_affinity(affinity)  # 422 before any write
    with ctx.read() as session:
        _owned_machine(session, machine_uuid, owner_uuid)
    chosen: dict[str, str] = {}

    def prepare(session: Session, machine: Machine, job_uuid: str) -> dict[str, Any]:
        if action in STARTING:
            m = _start(ctx, session, machine, job_uuid, action, target_server, parsed)
        else:
            m = _continue(session, machine, job_uuid, action)
        chosen["uuid"] = m.uuid
        return MigrationParams(migration=m.uuid).to_json()

    started = start_machine_job(ctx, machine_uuid, f"migrate_{action}", CHANGEABLE, caller,
                                prepare)
    with ctx.read() as session:
        m = session.get(Migration, chosen["uuid"])
        assert m is not None  # committed with the job
        return {**migration_to_ops(m), "job_uuid": started["job_uuid"]}


def _unfinished(session: Session, machine_uuid: str) -> Migration | None:
    return session.scalars(select(Migration).where(Migration.machine_uuid == machine_uuid,
                                                   UNFINISHED).with_for_update()).first()


def _start(ctx: ServiceContext, session: Session, machine: Machine, job_uuid: str,
           action: str, target_server: str | None, affinity: tuple[Any, ...]) -> Migration:
    current = _unfinished(session, machine.uuid)
    if current is not None:
        raise Conflict(f"machine {machine.uuid} has a migration already ({current.state}, "
                       f"phase {current.phase}): {_next_steps(current)} first",
                       code="InvalidState")
    if machine.server_uuid is None:
        raise Conflict(f"machine {machine.uuid} is on no server", code="InvalidState")
    held = migration_room.machine_size(session, machine)
    # without rules of its own, the request's: the machine moves by the rules it was made by
    rules = affinity or placement.parse_affinity(machine.affinity)
    target = _place_target(ctx, session, machine, held, target_server, rules)
    m = Migration(uuid=new_uuid(), machine_uuid=machine.uuid, owner_uuid=machine.owner_uuid,
                  source_server_uuid=machine.server_uuid, target_server_uuid=target,
                  state="running", phase="begin", automatic=action == "automatic",
                  job_uuid=job_uuid, syncs=0, sent_bytes=0, target_held=held,
                  progress_history=[])
    session.add(m)
    return m


def _next_steps(m: Migration) -> str:
    """What ends an unfinished migration from where it is."""
    if m.state == "running":
        return "wait for its job to end, then finish it"
    if m.state == "successful":
        return "finalize it (or roll it back)"
    return "switch and finalize it, or abort it"


def _continue(session: Session, machine: Machine, job_uuid: str, action: str) -> Migration:
    m = _unfinished(session, machine.uuid)
    if m is None:
        raise Conflict(f"machine {machine.uuid} has no migration in progress: begin one",
                       code="InvalidState")
    states, phases, why = ALLOWED[action]
    if m.state not in states or m.phase not in phases:
        raise Conflict(f"cannot {action} the migration of machine {machine.uuid}: it is "
                       f"{m.state} in phase {m.phase} ({why})", code="InvalidState")
    m.state, m.job_uuid, m.error = "running", job_uuid, None
    m.phase = PHASE_OF.get(action, m.phase)
    return m


# -- the target -------------------------------------------------------------------------------

def _networks(session: Session, machine: Machine) -> list[Network]:
    return list(session.scalars(select(Network).join(Nic, Nic.network_uuid == Network.uuid)
                                .where(Nic.machine_uuid == machine.uuid)).all())


def _place_target(ctx: ServiceContext, session: Session, machine: Machine,
                  held: dict[str, int], only: str | None, affinity: tuple[Any, ...]) -> str:
    """Placement's pick for the machine without its own server (or ``only``, checked as
    any other), with the machine's size held there; 409 InsufficientCapacity naming why
    no server fits."""
    source = machine.server_uuid or ""
    if only is not None:
        if only == source:
            raise InvalidArgument("target_server", "is the machine's own server")
        if not is_uuid(only) or session.get(Server, only) is None:
            raise InvalidArgument("target_server", f"no server {only}")
    package = session.get(Package, machine.package_uuid)
    image = session.get(Image, machine.image_uuid)
    if package is None:
        raise Conflict(f"machine {machine.uuid}'s package is gone", code="InvalidState")
    request = placement.build_request(package, image, machine.owner_uuid, None,
                                      placement.nic_tags_of(_networks(session, machine)))
    request = dataclasses.replace(request, ram_mb=held["ram_mb"], disk_mb=held["disk_mb"],
                                  cpu_cap=held["cpu"], affinity=affinity).excluding(source)
    snapshot = fleet.load_snapshot(session, machine.owner_uuid, only,
                                   with_machines=bool(affinity),
                                   image_uuid=request.image_uuid)
    policy = policy_for(ctx)
    decision = pipeline_for(ctx).decide(snapshot, request, policy)
    for candidate in decision.candidates:
        if migration_room.hold_target(session, candidate.uuid, held, policy):
            return candidate.uuid
    if decision.server is None:
        raise InsufficientCapacity(decision.explain(request), decision.reasons)
    raise InsufficientCapacity("the servers placement chose filled up meanwhile: try again",
                               {"lost races": len(decision.candidates)})
