"""A machine's tags and customer metadata: kept on its row, changed in the database only.

A change takes the row lock and is refused while a job holds the machine (``job_uuid``), so
it never interleaves with a workflow that rewrites the row; the owner is checked in the same
transaction, and another account's machine is ``NotFound``. With a ``caller``, the change is
also written as an already finished job, so the machine's audit shows who did it (CloudAPI
names these actions ``set_metadata``, ``remove_metadata``..., and ``triton ... -w`` waits for
them there).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Callable
from typing import Any, Literal

from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict, NotFound
from headnode.store.models import Job, Machine, utcnow

Kind = Literal["tags", "metadata"]
#: model attribute of each kind
COLUMNS: dict[str, str] = {"tags": "tags", "metadata": "customer_metadata"}
#: (kind, change) -> CloudAPI's audit action
AUDIT_ACTIONS = {
    ("tags", "add"): "set_tags", ("tags", "replace"): "replace_tags",
    ("tags", "delete_one"): "remove_tags", ("tags", "delete_all"): "remove_tags",
    ("metadata", "add"): "set_metadata", ("metadata", "replace"): "replace_metadata",
    ("metadata", "delete_one"): "remove_metadata",
    ("metadata", "delete_all"): "replace_metadata",
}


def _is_uuid(value: str) -> bool:
    try:
        uuidlib.UUID(value)
    except ValueError:
        return False
    return True


def _owned(machine: Machine | None, machine_uuid: str, owner_uuid: str) -> Machine:
    if machine is None or machine.owner_uuid != owner_uuid or machine.state == "destroyed":
        raise NotFound("machine", machine_uuid)
    return machine


def read(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind) -> dict[str, Any]:
    with ctx.read() as session:
        row = session.get(Machine, machine_uuid) if _is_uuid(machine_uuid) else None
        return dict(getattr(_owned(row, machine_uuid, owner_uuid), COLUMNS[kind]) or {})


def read_one(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
             key: str) -> Any:
    values = read(ctx, machine_uuid, owner_uuid, kind)
    if key not in values:
        raise NotFound("tag" if kind == "tags" else "metadata key", key)
    return values[key]


def _change(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
            change: Callable[[dict[str, Any]], dict[str, Any]], action: str,
            caller: dict[str, Any] | None, params: dict[str, Any]) -> dict[str, Any]:
    with ctx.transaction() as session:
        row = (session.get(Machine, machine_uuid, with_for_update=True)
               if _is_uuid(machine_uuid) else None)
        machine = _owned(row, machine_uuid, owner_uuid)
        if machine.job_uuid is not None:
            raise Conflict(f"machine {machine.uuid} is busy with job {machine.job_uuid}",
                           code="MachineBusy")
        # A new dict, so the JSON column is seen as changed.
        values = change(dict(getattr(machine, COLUMNS[kind]) or {}))
        setattr(machine, COLUMNS[kind], values)
        if caller is not None:
            now = utcnow()
            session.add(Job(name=AUDIT_ACTIONS[(kind, action)], machine_uuid=machine.uuid,
                            server_uuid=machine.server_uuid, owner_uuid=machine.owner_uuid,
                            params=params, caller=caller, execution="succeeded",
                            created_at=now, started_at=now, finished_at=now))
        return dict(values)


def add(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
        values: dict[str, Any], caller: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set the given keys (others are kept); returns the whole set."""
    return _change(ctx, machine_uuid, owner_uuid, kind, lambda old: {**old, **values},
                   "add", caller, {kind: sorted(values)})


def replace(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
            values: dict[str, Any], caller: dict[str, Any] | None = None) -> dict[str, Any]:
    return _change(ctx, machine_uuid, owner_uuid, kind, lambda _old: dict(values),
                   "replace", caller, {kind: sorted(values)})


def delete_one(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
               key: str, caller: dict[str, Any] | None = None) -> None:
    def without(old: dict[str, Any]) -> dict[str, Any]:
        if key not in old:
            raise NotFound("tag" if kind == "tags" else "metadata key", key)
        return {k: v for k, v in old.items() if k != key}

    _change(ctx, machine_uuid, owner_uuid, kind, without, "delete_one", caller, {kind: [key]})


def delete_all(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
               caller: dict[str, Any] | None = None) -> None:
    _change(ctx, machine_uuid, owner_uuid, kind, lambda _old: {}, "delete_all", caller,
            {kind: []})
