"""What a tenant sees of the cloud: its own machines (destroyed ones too, as CloudAPI shows
them), the images it may use, its account, and a machine's audit trail (its jobs).

Another account's object is reported exactly like one that does not exist (``NotFound``),
so a tenant cannot even learn that it exists.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from headnode.services import machines
from headnode.services.context import ServiceContext
from headnode.services.errors import NotFound
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


def destroyed_machine(ctx: ServiceContext, machine_uuid: str,
                      owner_uuid: str) -> dict[str, Any] | None:
    """The owner's destroyed machine (CloudAPI still answers for it, with 410), else None."""
    if not machines._is_uuid(machine_uuid):
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
        image = session.get(Image, image_uuid) if machines._is_uuid(image_uuid) else None
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
