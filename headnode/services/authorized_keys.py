"""An account's SSH keys as its machines' ``root_authorized_keys`` customer metadata, as
CloudAPI's CreateMachine puts them there: each key's OpenSSH line and a newline. The guest's
init writes them to its default user's ``authorized_keys`` at every boot.

At create, the owner's keys join the machine's metadata (a value the tenant gave for the key
itself wins); a CloudAPI create for an owner without keys, of an image that needs them (no
``requirements.password``), is refused. When the account's keys change, every live machine
of the account whose image needs keys gets the new value: its row in the same transaction,
its node an ``agent.machine_update_metadata`` after the commit (no reply asked).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from headnode.services.context import ServiceContext
from headnode.services.errors import Conflict
from headnode.store.models import ALIAS_HOLDING_STATES, Image, Key, Machine

METADATA_KEY = "root_authorized_keys"
#: CloudAPI's refusal of a create that would leave no way to log in
KEY_REQUIRED = "At least one SSH key is required to provision"
UPDATE_OP = "machine_update_metadata"
#: machines whose keys follow the account's: those that exist or are being made
LIVE_STATES = ALIAS_HOLDING_STATES

#: (server uuid, machine_update_metadata params), to send after the commit
Push = tuple[str, dict[str, Any]]


def owner_keys(session: Session, account_uuid: str) -> str:
    """The value of ``root_authorized_keys`` for the account's machines ("" without keys)."""
    lines = session.scalars(select(Key.key).where(Key.account_uuid == account_uuid)
                            .order_by(Key.created_at, Key.name))
    return "".join(f"{line}\n" for line in lines)


def needs_keys(requirements: Mapping[str, Any] | None) -> bool:
    """An image without ``requirements.password`` is logged in to with keys only."""
    return not (requirements or {}).get("password")


def with_owner_keys(session: Session, owner_uuid: str, requirements: Mapping[str, Any] | None,
                    metadata: dict[str, Any], require: bool) -> dict[str, Any]:
    """A create's customer metadata with the owner's keys. ``require`` (CloudAPI): no keys
    for an image that needs them is KeyRequired, before anything is written or held."""
    if METADATA_KEY in metadata:
        return metadata  # the tenant's own value
    keys = owner_keys(session, owner_uuid)
    if keys:
        return {**metadata, METADATA_KEY: keys}
    if require and needs_keys(requirements):
        raise Conflict(KEY_REQUIRED, code="KeyRequired")
    return metadata


def refresh_machines(session: Session, account_uuid: str) -> list[Push]:
    """After a change of the account's keys (flushed in ``session``): the new value on the
    row of every live machine of the account whose image needs keys and whose value
    differs, and what to tell each one's node once this commits."""
    keys = owner_keys(session, account_uuid)
    rows = session.execute(
        select(Machine.uuid, Machine.server_uuid, Machine.customer_metadata,
               Image.requirements)
        .join(Image, Image.uuid == Machine.image_uuid)
        .where(Machine.owner_uuid == account_uuid, Machine.state.in_(LIVE_STATES),
               Machine.server_uuid.is_not(None))
        # rows locked in one order, so two key changes of one account never wait in a cycle
        .order_by(Machine.uuid).with_for_update(of=Machine)).all()
    changed: list[dict[str, Any]] = []
    pushes: list[Push] = []
    for machine_uuid, server_uuid, metadata, requirements in rows:
        values = dict(metadata or {})
        if not needs_keys(requirements) or values.get(METADATA_KEY, "") == keys:
            continue
        if keys:
            values[METADATA_KEY] = keys
            change: dict[str, Any] = {"set_customer_metadata": {METADATA_KEY: keys}}
        else:
            values.pop(METADATA_KEY, None)
            change = {"remove_customer_metadata": [METADATA_KEY]}
        changed.append({"uuid": machine_uuid, "customer_metadata": values})
        pushes.append((server_uuid, {"uuid": machine_uuid, **change}))
    if changed:
        session.execute(update(Machine), changed)  # by primary key, one statement
    return pushes


def send(ctx: ServiceContext, pushes: list[Push]) -> None:
    """The committed key changes to the machines' nodes."""
    if ctx.jobs is None:
        return
    for server_uuid, params in pushes:
        ctx.jobs.send_agent(server_uuid, UPDATE_OP, params)
