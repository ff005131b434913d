"""The room a migrating machine holds on its two servers.

Begin holds the machine's size on the target, in flight (:func:`capacity.reserve_growth`,
the guarded UPDATE a resize's growth takes). Switch turns that hold into the target's usage
and moves the machine's reservation row there, while the source keeps its usage: the source
copy still exists (hidden) until finalize releases it, or until a rollback makes it the
machine again and gives the target's usage back. Each function changes the server sums in
single UPDATEs; the caller's migration record says which step has been done, so none is
applied twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from headnode.placement.state import Policy
from headnode.services import capacity
from headnode.store.models import Machine, Reservation, Server

#: what a hold is made of (the keys of ``Migration.target_held`` / ``source_held``)
RESOURCES = ("ram_mb", "disk_mb", "cpu")


def machine_size(session: Session, machine: Machine) -> dict[str, int]:
    """The room the machine takes: its committed reservation's, else its own size."""
    res = session.scalars(select(Reservation).where(
        Reservation.machine_uuid == machine.uuid, Reservation.state == "committed")
    ).one_or_none()
    if res is not None:
        return {"ram_mb": res.ram_mb, "disk_mb": res.disk_mb, "cpu": res.cpu}
    return {"ram_mb": machine.ram_mb, "disk_mb": machine.disk_mb, "cpu": machine.cpu_cap}


def hold_target(session: Session, server_uuid: str, held: dict[str, int],
                policy: Policy) -> bool:
    """Hold ``held`` on the target in flight; False if it does not fit there now."""
    return capacity.reserve_growth(session, server_uuid, held["ram_mb"], held["disk_mb"],
                                   held["cpu"], policy)


def release_target_hold(session: Session, server_uuid: str, held: dict[str, int]) -> None:
    """Give back the target's in-flight hold (a migration that ends before its switch)."""
    capacity.release_growth(session, server_uuid, held["ram_mb"], held["disk_mb"],
                            held["cpu"])


def _usage(session: Session, server_uuid: str, held: dict[str, int], sign: int) -> None:
    """Add (``sign`` 1) or remove (-1) one machine of size ``held`` to a server's usage."""
    count = Server.capped_count if held["cpu"] > 0 else Server.uncapped_count
    session.execute(
        update(Server).where(Server.uuid == server_uuid)
        .values({Server.ram_committed_mb: Server.ram_committed_mb + sign * held["ram_mb"],
                 Server.disk_committed_mb: Server.disk_committed_mb + sign * held["disk_mb"],
                 Server.cpu_committed: Server.cpu_committed + sign * held["cpu"],
                 Server.machine_count: Server.machine_count + sign,
                 count: count + sign})
        .execution_options(synchronize_session=False))


def _move_reservation(session: Session, machine_uuid: str, server_uuid: str) -> None:
    session.execute(
        update(Reservation)
        .where(Reservation.machine_uuid == machine_uuid, Reservation.state == "committed")
        .values(server_uuid=server_uuid)
        .execution_options(synchronize_session=False))


def switch_to_target(session: Session, machine_uuid: str, target_uuid: str,
                     held: dict[str, int]) -> None:
    """Switch: the target's hold becomes its usage and the machine's reservation moves
    there. The source's usage stays (the hidden source copy) until finalize or rollback."""
    capacity.release_growth(session, target_uuid, held["ram_mb"], held["disk_mb"],
                            held["cpu"])
    _usage(session, target_uuid, held, 1)
    _move_reservation(session, machine_uuid, target_uuid)


def back_to_source(session: Session, machine_uuid: str, source_uuid: str, target_uuid: str,
                   held: dict[str, int]) -> None:
    """Rollback (or a failed switch): the target's usage is given back and the machine's
    reservation returns to the source, whose usage never left."""
    _usage(session, target_uuid, held, -1)
    _move_reservation(session, machine_uuid, source_uuid)


def release_source(session: Session, source_uuid: str, held: dict[str, int]) -> None:
    """Finalize: the source copy is gone, and with it its usage."""
    _usage(session, source_uuid, held, -1)


def as_held(values: dict[str, Any] | None) -> dict[str, int]:
    values = values or {}
    return {k: int(values.get(k) or 0) for k in RESOURCES}
