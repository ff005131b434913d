"""A machine's snapshots: create, roll back (an operator's, keeping the machine's state, and
CloudAPI's StartMachineFromSnapshot, ending running) and delete; the shape of
:mod:`workflows.machines`' workflows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from headnode.store.models import MachineSnapshot
from workflows.engine import Step, StepContext, StepFailed, Workflow, register
from workflows.machines import ACTION_TIMEOUT, RECORD_TIMEOUT, machine_ref, record_state
from workflows.params import SnapshotParams


def _snapshot_name(ctx: StepContext) -> str:
    return SnapshotParams.of(ctx.job).snapshot


def snapshot_ref(ctx: StepContext) -> dict[str, Any]:
    return {"uuid": ctx.job.machine_uuid, "name": _snapshot_name(ctx)}


def _snapshot(ctx: StepContext) -> MachineSnapshot:
    name = _snapshot_name(ctx)
    row = ctx.session.get(MachineSnapshot, (ctx.job.machine_uuid, name))
    if row is None:
        raise StepFailed("SnapshotNotFound", f"snapshot {name} not found")
    return row


def _set_snapshot_state(ctx: StepContext, state: str) -> dict[str, Any]:
    _snapshot(ctx).state = state
    return {"snapshot": _snapshot_name(ctx), "state": state}


def record_snapshot_created(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    reported = (result.get("snapshot") or {}).get("name")
    if reported != _snapshot_name(ctx):
        raise StepFailed("SnapshotFailed", f"the node reports snapshot {reported!r}")
    return _set_snapshot_state(ctx, "created")


def mark_snapshot_failed(ctx: StepContext) -> dict[str, Any]:
    return _set_snapshot_state(ctx, "failed")


def record_snapshot_deleted(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    return _set_snapshot_state(ctx, "deleted")


def record_rollback(ctx: StepContext, result: dict[str, Any]) -> dict[str, Any]:
    """Rolling back destroys every newer snapshot on the node (as vmadm rollback-snapshot
    does), so they are gone here too."""
    target = _snapshot(ctx)
    newer = ctx.session.scalars(
        select(MachineSnapshot).where(MachineSnapshot.machine_uuid == target.machine_uuid,
                                      MachineSnapshot.state == "created",
                                      MachineSnapshot.created_at > target.created_at)
    ).all()
    for snapshot in newer:
        snapshot.state = "deleted"
    return {**record_state(ctx, result), "deleted_snapshots": [s.name for s in newer]}


SNAPSHOT_CREATE = register(Workflow(
    name="snapshot_create",
    chain=(Step("create_snapshot", ACTION_TIMEOUT, agent_op="snapshot_create",
                params=snapshot_ref, on_result=record_snapshot_created),),
    onerror=(Step("mark_snapshot_failed", RECORD_TIMEOUT, run=mark_snapshot_failed,
                  retries=2),),
    timeout=600,
))
ROLLBACK_STEP = Step("rollback_snapshot", ACTION_TIMEOUT, agent_op="snapshot_rollback",
                     params=snapshot_ref, on_result=record_rollback)
#: an operator's rollback: the machine keeps its state, running or stopped, on every backend
#: (vmadm rollback-snapshot would boot a stopped zone; the SmartOS backend rolls a stopped
#: zone's dataset back itself instead)
SNAPSHOT_ROLLBACK = register(Workflow(
    name="snapshot_rollback",
    chain=(ROLLBACK_STEP,),
    timeout=600,
))
#: CloudAPI's StartMachineFromSnapshot: the machine ends running, also when it was stopped
#: (one message: the node starts it right after the rollback)
SNAPSHOT_START = register(Workflow(
    name="snapshot_start",
    chain=(ROLLBACK_STEP,
           Step("start_machine", ACTION_TIMEOUT, agent_op="machine_start", params=machine_ref,
                on_result=record_state, joins_previous=True)),
    timeout=600,
))
SNAPSHOT_DELETE = register(Workflow(
    name="snapshot_delete",
    chain=(Step("delete_snapshot", ACTION_TIMEOUT, agent_op="snapshot_delete",
                params=snapshot_ref, on_result=record_snapshot_deleted),),
    timeout=600,
))
