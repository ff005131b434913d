"""Snapshots of a machine's dataset (kept on its node): create, list, get, roll back, delete.

Each change runs as a job under the machine's lock, as every change to a machine does. The
head node keeps one row per name: ``queued`` until the node has made it, then ``created``;
``failed`` if the node could not; ``deleted`` once the node has removed it. A deleted or
failed name may be used again; a deleted snapshot is gone from the API (404), as CloudAPI's
clients expect when they wait for a delete.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, InvalidArgument, NotFound
from headnode.services.machines import CHANGEABLE, load_machine, start_machine_job
from headnode.store.models import Machine, MachineSnapshot, utcnow
from schemas.agent import SnapshotRefSchema
from workflows.params import SnapshotParams

LIVE_STATES = ("queued", "created", "failed")


def snapshot_to_dict(row: MachineSnapshot) -> dict[str, Any]:
    return {"name": row.name, "state": row.state, "created_at": row.created_at,
            "updated_at": row.updated_at}


def _check_name(name: Any) -> str:
    # The node's own rule (the wire schema), so a name the API takes is one a node can use.
    errors = SnapshotRefSchema().validate({"uuid": "-", "name": name})
    if "name" in errors:
        raise InvalidArgument("name", "1-64 characters of [A-Za-z0-9_.:-], starting with a "
                                      "letter or digit")
    return str(name)


def _row(session: Session, machine_uuid: str, name: str) -> MachineSnapshot:
    row = session.get(MachineSnapshot, (machine_uuid, name))
    if row is None or row.state == "deleted":
        raise NotFound("snapshot", name)
    return row


def create_snapshot(ctx: ServiceContext, machine_uuid: str, name: str,
                    caller: dict[str, Any]) -> dict[str, Any]:
    name = _check_name(name)

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        row = session.get(MachineSnapshot, (machine.uuid, name), with_for_update=True)
        if row is None:
            session.add(MachineSnapshot(machine_uuid=machine.uuid, name=name, state="queued"))
        elif row.state in ("queued", "created"):
            raise Conflict(f"machine {machine.uuid} already has a snapshot {name!r}",
                           code="DuplicateSnapshot")
        else:  # a failed or deleted name is free again
            row.state = "queued"
            row.created_at = utcnow()
        return SnapshotParams(snapshot=name).to_json()

    answer = start_machine_job(ctx, machine_uuid, "snapshot_create", CHANGEABLE, caller,
                               prepare)
    answer["snapshot"] = get_snapshot(ctx, machine_uuid, name)
    return answer


def list_snapshots(ctx: ServiceContext, machine_uuid: str) -> list[dict[str, Any]]:
    with ctx.read() as session:
        machine = load_machine(session, machine_uuid)
        rows = session.scalars(
            select(MachineSnapshot)
            .where(MachineSnapshot.machine_uuid == machine.uuid,
                   MachineSnapshot.state.in_(LIVE_STATES))
            .order_by(MachineSnapshot.created_at, MachineSnapshot.name)
        ).all()
        return [snapshot_to_dict(r) for r in rows]


def get_snapshot(ctx: ServiceContext, machine_uuid: str, name: str) -> dict[str, Any]:
    with ctx.read() as session:
        machine = load_machine(session, machine_uuid)
        return snapshot_to_dict(_row(session, machine.uuid, name))


def _job_on_snapshot(ctx: ServiceContext, machine_uuid: str, name: str, workflow: str,
                     states: tuple[str, ...], caller: dict[str, Any]) -> dict[str, Any]:
    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        row = _row(session, machine.uuid, name)
        if row.state not in states:
            raise Conflict(f"snapshot {name!r} is {row.state}, not {' or '.join(states)}",
                           code="InvalidState")
        return SnapshotParams(snapshot=name).to_json()

    return start_machine_job(ctx, machine_uuid, workflow, CHANGEABLE, caller, prepare)


def rollback_snapshot(ctx: ServiceContext, machine_uuid: str, name: str,
                      caller: dict[str, Any]) -> dict[str, Any]:
    """Restore the machine's dataset to the snapshot; the machine keeps its state."""
    return _job_on_snapshot(ctx, machine_uuid, name, "snapshot_rollback", ("created",),
                            caller)


def start_from_snapshot(ctx: ServiceContext, machine_uuid: str, name: str,
                        caller: dict[str, Any]) -> dict[str, Any]:
    """CloudAPI's StartMachineFromSnapshot: restore the dataset, then the machine runs
    (also one that was stopped)."""
    return _job_on_snapshot(ctx, machine_uuid, name, "snapshot_start", ("created",), caller)


def delete_snapshot(ctx: ServiceContext, machine_uuid: str, name: str,
                    caller: dict[str, Any]) -> dict[str, Any]:
    # A failed snapshot may be half made on the node: deleting it there is harmless.
    return _job_on_snapshot(ctx, machine_uuid, name, "snapshot_delete", ("created", "failed"),
                            caller)
