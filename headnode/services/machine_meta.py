"""A machine's tags and customer metadata: read from its row, changed by a job.

A change is a job, as in CloudAPI (where it is a VMAPI update job): the request takes the
machine's lock (one job per machine at a time, 409 while another runs), names the change
(keys to set, keys to remove) and answers what the set will be; the job applies it on the
node, then on the row, and its end is the audit entry (CloudAPI's actions ``set_metadata``,
``remove_metadata``, ...), newer than the answer, which ``triton ... -w`` waits for. Reads
show the row, so a change shows once its job has ended. Another account's machine is
``NotFound``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy.orm import Session

from headnode.services.context import ServiceContext
from headnode.services.errors import NotFound
from headnode.services.machines import CHANGEABLE, start_machine_job
from headnode.services.resolve import is_uuid
from headnode.store.models import Machine
from schemas.agent import apply_metadata_change
from workflows.params import MetadataParams

Kind = Literal["tags", "metadata"]
#: model attribute of each kind (also the name in the agent's change: set_<column>, ...)
COLUMNS: dict[str, str] = {"tags": "tags", "metadata": "customer_metadata"}
#: workflow name (CloudAPI's audit action) -> the machine column it changes
METADATA_WORKFLOWS = {
    "set_tags": "tags", "replace_tags": "tags", "remove_tags": "tags",
    "set_metadata": "customer_metadata", "replace_metadata": "customer_metadata",
    "remove_metadata": "customer_metadata",
}
#: (kind, change) -> CloudAPI's audit action, which is the job's workflow
AUDIT_ACTIONS = {
    ("tags", "add"): "set_tags", ("tags", "replace"): "replace_tags",
    ("tags", "delete_one"): "remove_tags", ("tags", "delete_all"): "remove_tags",
    ("metadata", "add"): "set_metadata", ("metadata", "replace"): "replace_metadata",
    ("metadata", "delete_one"): "remove_metadata",
    ("metadata", "delete_all"): "replace_metadata",
}
assert set(AUDIT_ACTIONS.values()) == set(METADATA_WORKFLOWS)

#: the current values -> (pairs to set, keys to remove)
Change = Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]]


def _owned(machine: Machine | None, machine_uuid: str, owner_uuid: str) -> Machine:
    if machine is None or machine.owner_uuid != owner_uuid or machine.state == "destroyed":
        raise NotFound("machine", machine_uuid)
    return machine


def _missing(kind: Kind, key: str) -> NotFound:
    return NotFound("tag" if kind == "tags" else "metadata key", key)


def read(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind) -> dict[str, Any]:
    with ctx.read() as session:
        row = session.get(Machine, machine_uuid) if is_uuid(machine_uuid) else None
        return dict(getattr(_owned(row, machine_uuid, owner_uuid), COLUMNS[kind]) or {})


def read_one(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
             key: str) -> Any:
    values = read(ctx, machine_uuid, owner_uuid, kind)
    if key not in values:
        raise _missing(kind, key)
    return values[key]


def _change(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
            change: Change, action: str, caller: dict[str, Any] | None) -> dict[str, Any]:
    """Start the job that makes ``change``; returns the values it will leave."""
    # Another account's machine is not found before anything is taken (not "busy").
    read(ctx, machine_uuid, owner_uuid, kind)
    column = COLUMNS[kind]
    after: dict[str, Any] = {}

    def prepare(session: Session, machine: Machine, _job_uuid: str) -> dict[str, Any]:
        # Read again now that the lock is ours: a job may have ended since the first read.
        session.refresh(machine)
        _owned(machine, machine_uuid, owner_uuid)
        current = dict(getattr(machine, column) or {})
        set_, remove = change(current)
        after.update(apply_metadata_change(current, remove, set_))
        return MetadataParams(column, set_, remove).to_json()

    start_machine_job(ctx, machine_uuid, AUDIT_ACTIONS[(kind, action)], CHANGEABLE,
                      caller or {}, prepare)
    return after


def add(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
        values: dict[str, Any], caller: dict[str, Any] | None = None) -> dict[str, Any]:
    """Set the given keys (others are kept); returns the whole set as it will be."""
    return _change(ctx, machine_uuid, owner_uuid, kind, lambda _old: (dict(values), []),
                   "add", caller)


def replace(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
            values: dict[str, Any], caller: dict[str, Any] | None = None) -> dict[str, Any]:
    return _change(ctx, machine_uuid, owner_uuid, kind,
                   lambda old: (dict(values), sorted(old.keys() - values.keys())),
                   "replace", caller)


def delete_one(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
               key: str, caller: dict[str, Any] | None = None) -> None:
    def without(old: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        if key not in old:
            raise _missing(kind, key)
        return {}, [key]

    _change(ctx, machine_uuid, owner_uuid, kind, without, "delete_one", caller)


def delete_all(ctx: ServiceContext, machine_uuid: str, owner_uuid: str, kind: Kind,
               caller: dict[str, Any] | None = None) -> None:
    _change(ctx, machine_uuid, owner_uuid, kind, lambda old: ({}, sorted(old)), "delete_all",
            caller)
