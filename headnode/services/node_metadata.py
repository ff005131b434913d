"""A node's account of a machine's customer metadata: the map a node answers to a change
(``agent.machine_update_metadata``) and the map it sends when the machine's guest changed it
(``events.machine_metadata``).

A node counts the changes of each machine's metadata (its ``serial``). The two kinds of
message travel through different queues and may arrive in any order, so a map is applied
only if its serial is newer than the one applied last (``machines.metadata_serial``), or
when there is nothing to compare: a node that keeps no serial (sim, SmartOS) sends none, and
a machine whose node never sent one has none. The compare and the write are one guarded
UPDATE, so two messages applied at once cannot leave the older map behind.
"""

from __future__ import annotations

import logging
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from headnode.store.models import Machine
from schemas.agent import MachineMetadataEventSchema

log = logging.getLogger(__name__)


def is_newer(serial: int | None, applied: int | None) -> bool:
    """Whether a map with ``serial`` replaces one applied with ``applied``."""
    return serial is None or applied is None or serial > applied


def apply_map(session: Session, machine_uuid: str, customer_metadata: dict[str, Any],
              serial: int, server_uuid: str | None = None) -> bool:
    """Make the node's map the machine's customer metadata if ``serial`` is newer than the
    one applied last (and, with ``server_uuid``, the machine lives there). True if it was."""
    done = session.execute(
        update(Machine)
        .where(Machine.uuid == machine_uuid, Machine.state != "destroyed",
               *([Machine.server_uuid == server_uuid] if server_uuid else []),
               or_(Machine.metadata_serial.is_(None), Machine.metadata_serial < serial))
        .values(customer_metadata=dict(customer_metadata), metadata_serial=serial)
        .execution_options(synchronize_session=False))
    return bool(done.rowcount)  # type: ignore[attr-defined]


def reply_serial(result: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """The map and serial of a node's answer to a metadata change, if it keeps a serial."""
    serial, values = result.get("serial"), result.get("customer_metadata")
    if isinstance(serial, int) and not isinstance(serial, bool) and isinstance(values, dict):
        return values, serial
    return None


def apply_guest_change(session: Session, raw: dict[str, Any]) -> bool:
    """``events.machine_metadata``: a guest's own change, applied under the serial rule. A
    malformed event, or one about a machine that is not known here, is destroyed or lives
    on another server, is logged and dropped (False)."""
    try:
        event = MachineMetadataEventSchema().load(raw, unknown="exclude")
    except ValidationError as exc:
        log.warning("machine metadata event dropped, it does not parse: %s", exc.messages)
        return False
    applied = apply_map(session, event["uuid"], event["customer_metadata"], event["serial"],
                        server_uuid=event["server_uuid"])
    if not applied:
        log.info("machine metadata event of %s from server %s (serial %d) not applied: "
                 "older than what was, or no such machine there", event["uuid"],
                 event["server_uuid"], event["serial"])
    return applied
