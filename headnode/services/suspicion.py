"""A machine its node's report left out is suspected, not destroyed: the bookkeeping.

The node is asked before we believe the report (``workflows.nodes`` asks and settles);
``sdc doctor`` suspects a machine the same way when an operator asks it to.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from headnode.store.models import Machine

#: the suspicion columns of a machine nobody suspects
CLEARED: dict[str, Any] = {"missing_since": None, "missing_asked_at": None,
                           "missing_confirmed_at": None}


def utc(moment: datetime) -> datetime:
    """A stored time as an aware UTC one: SQLite (``sdc up``) gives naive ones back."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def suspected_since(machine: Machine) -> str:
    """The suspicion a question names ("" when none): its answer settles only that one."""
    return utc(machine.missing_since).isoformat() if machine.missing_since else ""


def note(session: Session, machine: Machine, **values: Any) -> None:
    """Write suspicion bookkeeping without touching ``updated_at``: it is not news of the
    machine, and a report is compared with ``updated_at`` to know whether it is newer."""
    session.execute(update(Machine).where(Machine.uuid == machine.uuid)
                    .values(updated_at=Machine.updated_at, **values)
                    .execution_options(synchronize_session=False))
    for key, value in values.items():
        set_committed_value(machine, key, value)


def suspect(session: Session, machine: Machine, since: datetime) -> None:
    """A report taken at ``since`` left the machine out: ask its node (the reconciler
    sends the question if the report's handler does not)."""
    note(session, machine, **{**CLEARED, "missing_since": since})
