"""What a tenant sees of the cloud: its own machines (destroyed ones too, as CloudAPI shows
them), the images it may use, its account, and a machine's audit trail (its jobs).

Another account's object is reported exactly like one that does not exist (``NotFound``),
so a tenant cannot even learn that it exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Text, case, cast, exists, func, literal, or_, select, true
from sqlalchemy.dialects.postgresql import JSONB

from headnode.services import machines
from headnode.services.context import ServiceContext
from headnode.services.errors import NotFound
from headnode.services.resolve import is_uuid
from headnode.store.models import Account, Image, Job, Machine

#: job executions that are over, and how CloudAPI's audit spells their outcome
AUDIT_SUCCESS = {"succeeded": "yes", "failed": "no", "canceled": "no"}
AUDIT_LIMIT = 1000


def owned_machine(ctx: ServiceContext, machine_uuid: str, owner_uuid: str) -> dict[str, Any]:
    """The machine as ``machines.get_machine`` gives it, if ``owner_uuid`` owns it."""
    machine = machines.get_machine(ctx, machine_uuid)
    if machine["owner_uuid"] != owner_uuid:
        raise NotFound("machine", machine_uuid)
    return machine


@dataclass(frozen=True)
class MachineFilter:
    """What ListMachines may ask for, in our terms; None (or empty) asks nothing."""

    alias: str | None = None
    image_uuid: str | None = None
    package_uuid: str | None = None
    state: str | None = None
    ram_mb: int | None = None
    brand: str | None = None
    #: only hardware virtual machines (True), only the others (False)
    hvm: bool | None = None
    hvm_brands: tuple[str, ...] = ("kvm", "bhyve")
    #: every tag named, with its value as text (a boolean as true/false)
    tags: dict[str, str] = field(default_factory=dict)
    #: only machines with at least one tag
    any_tag: bool = False
    #: destroyed machines too: all (True) or those destroyed at or after a time
    destroyed_since: datetime | bool = False


def list_machines(ctx: ServiceContext, owner_uuid: str, wanted: MachineFilter, *, limit: int,
                  offset: int) -> tuple[list[dict[str, Any]], int]:
    """The owner's machines that match, oldest first: one page and the count of all that
    match. Every filter is part of the SQL, so pages are full and the count is right."""
    with ctx.read() as session:
        conditions = machine_conditions(session.get_bind().dialect.name, owner_uuid, wanted)
        total = session.scalar(select(func.count()).select_from(Machine).where(*conditions))
        rows = session.scalars(
            select(Machine).where(*conditions).order_by(Machine.created_at, Machine.uuid)
            .limit(limit).offset(offset)
        ).all()
        return [machines.machine_to_dict(m) for m in rows], int(total or 0)


def machine_conditions(dialect: str, owner_uuid: str,
                       wanted: MachineFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Machine.owner_uuid == owner_uuid]
    equal = {Machine.alias: wanted.alias, Machine.image_uuid: wanted.image_uuid,
             Machine.package_uuid: wanted.package_uuid, Machine.state: wanted.state,
             Machine.ram_mb: wanted.ram_mb, Machine.brand: wanted.brand}
    conditions += [column == value for column, value in equal.items() if value is not None]
    if wanted.hvm is not None:
        hvm = Machine.brand.in_(wanted.hvm_brands)
        conditions.append(hvm if wanted.hvm else ~hvm)
    if wanted.state is None:
        conditions.append(_live_or_tombstone(wanted.destroyed_since))
    conditions += [tag_equals(dialect, name, value) for name, value in wanted.tags.items()]
    if wanted.any_tag:
        conditions.append(has_tags(dialect))
    return conditions


def _live_or_tombstone(destroyed_since: datetime | bool) -> ColumnElement[bool]:
    if destroyed_since is True:
        return true()
    live = Machine.state != "destroyed"
    if isinstance(destroyed_since, datetime):
        return or_(live, Machine.destroyed_at >= destroyed_since)
    return live


def tombstone_since(minutes: int, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(minutes=minutes)


def tag_equals(dialect: str, name: str, value: str) -> ColumnElement[bool]:
    """The machine has tag ``name`` whose value, as text, is ``value`` (a number as it was
    written, a boolean as true or false). Names and values are bound parameters."""
    if dialect == "postgresql":
        return Machine.tags.op("->>")(literal(name, Text)) == value
    # SQLite: json_each gives each key with its JSON type, so no JSON path is built from
    # the name (a name may hold quotes or dots).
    entry = func.json_each(Machine.tags).table_valued("key", "value", "type")
    as_text = case((entry.c.type == "true", "true"), (entry.c.type == "false", "false"),
                   else_=cast(entry.c.value, Text))
    return exists(select(1).select_from(entry).where(entry.c.key == name, as_text == value))


def has_tags(dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        tags = cast(Machine.tags, JSONB)
        return (func.jsonb_typeof(tags) == "object") & (tags != cast(literal("{}"), JSONB))
    entry = func.json_each(Machine.tags).table_valued("key")
    return (func.json_type(Machine.tags) == "object") & exists(select(1).select_from(entry))


def destroyed_machine(ctx: ServiceContext, machine_uuid: str,
                      owner_uuid: str) -> dict[str, Any] | None:
    """The owner's destroyed machine (CloudAPI still answers for it, with 410), else None."""
    if not is_uuid(machine_uuid):
        return None
    with ctx.read() as session:
        row = session.get(Machine, machine_uuid)
        if row is None or row.owner_uuid != owner_uuid or row.state != "destroyed":
            return None
        return machines.machine_to_dict(row)


def visible_images(ctx: ServiceContext, account_uuid: str,
                   **filters: Any) -> list[Image]:
    """Public images and the account's own, filtered on manifest fields."""
    query = select(Image).where(or_(Image.public.is_(True), Image.owner_uuid == account_uuid))
    columns = {"name": Image.name, "os": Image.os, "version": Image.version,
               "public": Image.public, "type": Image.type, "owner": Image.owner_uuid}
    for key, value in filters.items():
        if value is not None and key in columns:
            query = query.where(columns[key] == value)
    state = filters.get("state")
    if state is None:
        query = query.where(Image.state == "active")  # as IMGAPI: only usable ones by default
    elif state != "all":
        query = query.where(Image.state == state)
    with ctx.read() as session:
        return list(session.scalars(query.order_by(Image.name, Image.version, Image.uuid)))


def visible_image(ctx: ServiceContext, image_uuid: str, account_uuid: str) -> Image:
    with ctx.read() as session:
        image = session.get(Image, image_uuid) if is_uuid(image_uuid) else None
    if image is None or not (image.public or image.owner_uuid == account_uuid):
        raise NotFound("image", image_uuid)
    return image


def update_account(ctx: ServiceContext, account_uuid: str, changes: dict[str, Any]) -> Account:
    with ctx.transaction() as session:
        account = session.get(Account, account_uuid, with_for_update=True)
        if account is None:
            raise NotFound("account", account_uuid)
        for key, value in changes.items():
            setattr(account, key, value)
    return account


def machine_audit(ctx: ServiceContext, machine_uuid: str) -> list[dict[str, Any]]:
    """The machine's finished jobs, newest first, as CloudAPI's audit entries."""
    query = (select(Job).where(Job.machine_uuid == machine_uuid,
                               Job.execution.in_(tuple(AUDIT_SUCCESS)))
             .order_by(Job.finished_at.desc(), Job.created_at.desc()).limit(AUDIT_LIMIT))
    with ctx.read() as session:
        return [audit_entry(job) for job in session.scalars(query)]


def audit_entry(job: Job) -> dict[str, Any]:
    params = {k: v for k, v in (job.params or {}).items() if k not in ("chain", "onerror")}
    return {
        "id": job.uuid,
        "action": job.name,
        "parameters": params,
        "success": AUDIT_SUCCESS[job.execution],
        "time": job.finished_at,
        "caller": audit_caller(job.caller or {}),
    }


def audit_caller(caller: dict[str, Any]) -> dict[str, Any]:
    """CloudAPI's caller: the authentication type and key id; for an operator acting as the
    account, the operator's login too."""
    out: dict[str, Any] = {"type": caller.get("type", "operator")}
    for key in ("keyId", "ip"):
        if caller.get(key):
            out[key] = caller[key]
    if caller.get("acting_as"):
        out["operator"] = caller.get("login")
        out["account"] = caller["acting_as"]
    elif caller.get("login"):
        out["account"] = caller["login"]
    return out
