"""Capacity held on servers: reserve for a provision, commit into usage, release.

The sums live on the server row and change only through single UPDATE statements whose WHERE
clause re-checks the room left, so two concurrent provisions can never both take the last
slot (PostgreSQL re-evaluates the WHERE after the row lock; SQLite serializes writers).
Each reservation row moves once: held -> committed -> released, or held -> released; the
guarded state change makes every call idempotent.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    Float,
    Integer,
    Row,
    String,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    insert,
    not_,
    select,
    update,
)
from sqlalchemy.orm import Session

from headnode.placement import fit
from headnode.placement.state import Policy
from headnode.services import fleet
from headnode.services.conflicts import insert_unless_taken
from headnode.services.statements import per_thread_cache
from headnode.store.models import Job, Reservation, Server, ServerImage, utcnow

SERVERS: Table = Server.__table__  # type: ignore[assignment]
SERVER_IMAGES: Table = ServerImage.__table__  # type: ignore[assignment]
RESERVATIONS: Table = Reservation.__table__  # type: ignore[assignment]


def reserve(
    session: Session,
    server_uuid: str,
    machine_uuid: str,
    job_uuid: str,
    ram_mb: int,
    disk_mb: int,
    cpu: int,
    policy: Policy,
    image_uuid: str | None = None,
    image_mb: int = 0,
) -> bool:
    """Hold room on one server for one machine; False if it no longer fits.

    The WHERE clause is fit.py's rules (whether the server takes machines; RAM, disk, CPU,
    capness, machine count), the ones the placement filters ask, evaluated on the locked
    row. An image new to the server also takes its
    size from the pool, once per server (``server_images``' primary key decides who is
    first)."""
    if not _hold(session, server_uuid, ram_mb, disk_mb, cpu, policy, image_uuid, image_mb):
        return False
    # Core, not an ORM object: nothing reads it back here, and the unit of work costs more
    # than the statement (the model's defaults apply all the same).
    session.execute(insert(RESERVATIONS), {
        "machine_uuid": machine_uuid, "server_uuid": server_uuid, "job_uuid": job_uuid,
        "ram_mb": ram_mb, "disk_mb": disk_mb, "cpu": cpu})
    return True


def _hold(session: Session, server_uuid: str, ram_mb: int, disk_mb: int, cpu: int,
          policy: Policy, image_uuid: str | None, image_mb: int) -> bool:
    claimed = _claim_image(session, server_uuid, image_uuid, image_mb)
    image_add = image_mb if claimed else 0
    result = session.execute(_hold_statement(cpu > 0), {
        "b_server_uuid": server_uuid, "b_ram_mb": ram_mb, "b_disk_mb": disk_mb, "b_cpu": cpu,
        "b_image_add": image_add, **_policy_params(policy)})
    if result.rowcount == 1:  # type: ignore[attr-defined]
        return True
    if claimed:
        # A refusal takes back the claim it made (this transaction's own uncommitted row;
        # a claim another provision made is never touched). Cheaper than a savepoint
        # around every reservation, for the rare refusal.
        session.execute(
            delete(SERVER_IMAGES)
            .where(SERVER_IMAGES.c.server_uuid == server_uuid,
                   SERVER_IMAGES.c.image_uuid == image_uuid)
        )
    return False


@per_thread_cache
def _hold_statement(capped: bool) -> Update:
    """The guarded UPDATE, built once per kind of machine (capped CPU or not): on every
    provision, building it anew cost more than running it. Core, on the table: its
    parameters (``b_`` + a name: the plain names are the columns') are bound at execution."""
    s = SERVERS.c
    return (
        update(SERVERS)
        .where(_room(capped))
        .values(
            ram_inflight_mb=s.ram_inflight_mb + bindparam("b_ram_mb", type_=Integer),
            disk_inflight_mb=s.disk_inflight_mb + bindparam("b_disk_mb", type_=Integer),
            cpu_inflight=s.cpu_inflight + bindparam("b_cpu", type_=Integer),
            machine_count=s.machine_count + 1,
            capped_count=s.capped_count + (1 if capped else 0),
            uncapped_count=s.uncapped_count + (0 if capped else 1),
            images_mb=s.images_mb + bindparam("b_image_add", type_=Integer),
        )
    )


def _room(capped: bool) -> Any:
    """fit.py's rules, on the locked row: the same expressions the placement filters
    evaluate in Python, here over the row's columns and the statement's parameters."""
    return and_(SERVERS.c.uuid == bindparam("b_server_uuid", type_=String),
                fit.fits(fleet.fit_columns(), _policy_binds(), _SQL, capped,
                         ram_mb=bindparam("b_ram_mb", type_=Integer),
                         disk_mb=bindparam("b_disk_mb", type_=Integer),
                         cpu_cap=bindparam("b_cpu", type_=Integer),
                         image_mb=bindparam("b_image_add", type_=Integer)))


class _SQLLogic:
    @staticmethod
    def all(*conditions: Any) -> Any:
        return and_(*conditions)

    @staticmethod
    def not_(condition: Any) -> Any:
        return not_(condition)


_SQL = _SQLLogic()


def _policy_binds() -> SimpleNamespace:
    """The policy as the rules read it: one parameter ``b_<name>`` per knob. Built anew for
    each statement, as fleet.fit_columns (see services/statements.py)."""
    return SimpleNamespace(**{
        name: bindparam(f"b_{name}", type_=Integer if name == "max_machines" else Float)
        for name in fit.POLICY_KNOBS})


def _policy_params(policy: Policy) -> dict[str, Any]:
    # Ratios always go as floats: the database then does the float arithmetic Python does.
    return {f"b_{name}": int(value) if name == "max_machines" else float(value)
            for name in fit.POLICY_KNOBS for value in (getattr(policy, name),)}


def _claim_image(session: Session, server_uuid: str, image_uuid: str | None,
                 image_mb: int) -> bool:
    """Record that the image lands on the server; True if this is the first time. A server
    gone since placement chose it (forgotten) claims nothing: its guarded UPDATE then finds no
    row, and the create goes elsewhere."""
    if not image_uuid:
        return False
    # The share lock a claim's foreign key would take anyway, taken first: a server deleted
    # meanwhile is a refusal here rather than the claim's foreign-key error, and a forget
    # waits for this transaction (then counts its machine).
    if session.execute(select(SERVERS.c.uuid).where(SERVERS.c.uuid == server_uuid)
                       .with_for_update(read=True, key_share=True)).first() is None:
        return False
    return insert_unless_taken(session, SERVER_IMAGES, {
        "server_uuid": server_uuid, "image_uuid": image_uuid, "size_mb": image_mb,
        "created_at": utcnow()}, returning="image_uuid")


def _move(
    session: Session, machine_uuid: str, from_state: str, to_state: str
) -> Row[str, int, int, int] | None:
    """Change a reservation's state if it is in ``from_state``; if it moved, return what it
    holds (server_uuid, ram_mb, disk_mb, cpu)."""
    values: dict[str, object] = {"state": to_state}
    if to_state == "released":
        values["ended_at"] = utcnow()
    return session.execute(
        update(Reservation)
        .where(Reservation.machine_uuid == machine_uuid, Reservation.state == from_state)
        .values(**values)
        .returning(Reservation.server_uuid, Reservation.ram_mb, Reservation.disk_mb,
                   Reservation.cpu)
        .execution_options(synchronize_session=False)
    ).first()


def commit(session: Session, machine_uuid: str) -> bool:
    """The machine exists on its node now: its held room becomes usage."""
    res = _move(session, machine_uuid, "held", "committed")
    if res is None:
        return False
    session.execute(
        update(Server)
        .where(Server.uuid == res.server_uuid)
        .values(
            ram_inflight_mb=Server.ram_inflight_mb - res.ram_mb,
            disk_inflight_mb=Server.disk_inflight_mb - res.disk_mb,
            cpu_inflight=Server.cpu_inflight - res.cpu,
            ram_committed_mb=Server.ram_committed_mb + res.ram_mb,
            disk_committed_mb=Server.disk_committed_mb + res.disk_mb,
            cpu_committed=Server.cpu_committed + res.cpu,
        )
        .execution_options(synchronize_session=False)
    )
    return True


def release(session: Session, machine_uuid: str) -> bool:
    """Give back whatever the machine holds (in flight or committed); idempotent."""
    for from_state, prefix in (("held", "inflight"), ("committed", "committed")):
        res = _move(session, machine_uuid, from_state, "released")
        if res is None:
            continue
        ram = getattr(Server, f"ram_{prefix}_mb")
        disk = getattr(Server, f"disk_{prefix}_mb")
        cpu = getattr(Server, f"cpu_{prefix}")
        session.execute(
            update(Server)
            .where(Server.uuid == res.server_uuid)
            .values({ram: ram - res.ram_mb, disk: disk - res.disk_mb, cpu: cpu - res.cpu,
                     Server.machine_count: Server.machine_count - 1,
                     _capness_count(res.cpu): _capness_count(res.cpu) - 1})
            .execution_options(synchronize_session=False)
        )
        return True
    return False


def _capness_count(cpu: int) -> Any:
    return Server.capped_count if cpu > 0 else Server.uncapped_count


def release_orphans(session: Session) -> int:
    """Release held reservations whose job has ended or vanished (a crash between steps)."""
    orphans = session.scalars(
        select(Reservation.machine_uuid)
        .outerjoin(Job, Job.uuid == Reservation.job_uuid)
        .where(Reservation.state == "held",
               (Job.uuid.is_(None)) | (Job.execution.in_(("succeeded", "failed", "canceled"))))
    ).all()
    return sum(1 for machine_uuid in orphans if release(session, machine_uuid))


# -- resize: a machine that changes size keeps its reservation row, which follows its size --


def reserve_growth(session: Session, server_uuid: str, ram_mb: int, disk_mb: int, cpu: int,
                   policy: Policy) -> bool:
    """Hold the extra room a growing machine needs on its own server (in flight until its
    resize job commits it); False if it does not fit. Zero growth always fits. The growth
    must fit by fit.py's RAM and disk rules, as a new machine's size would (CPU shares are
    not checked for growth)."""
    if ram_mb <= 0 and disk_mb <= 0 and cpu <= 0:
        return True
    row = fleet.fit_columns()
    room = and_(SERVERS.c.uuid == server_uuid, fit.ram_fits(row, policy, ram_mb),
                fit.disk_fits(row, policy, disk_mb, 0))
    result = session.execute(
        update(Server).where(room)
        .values(ram_inflight_mb=Server.ram_inflight_mb + ram_mb,
                disk_inflight_mb=Server.disk_inflight_mb + disk_mb,
                cpu_inflight=Server.cpu_inflight + cpu)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def release_growth(session: Session, server_uuid: str, ram_mb: int, disk_mb: int,
                   cpu: int) -> None:
    """Give back room held by :func:`reserve_growth` (a resize that failed)."""
    if ram_mb <= 0 and disk_mb <= 0 and cpu <= 0:
        return
    session.execute(
        update(Server).where(Server.uuid == server_uuid)
        .values(ram_inflight_mb=Server.ram_inflight_mb - ram_mb,
                disk_inflight_mb=Server.disk_inflight_mb - disk_mb,
                cpu_inflight=Server.cpu_inflight - cpu)
        .execution_options(synchronize_session=False)
    )


def commit_resize(session: Session, machine_uuid: str, server_uuid: str,
                  held: dict[str, int], delta: dict[str, int]) -> bool:
    """The node has resized the machine: the held growth leaves ``in flight``, and the
    machine's committed usage (its reservation row and the server's sums) changes by
    ``delta`` (negative when it shrank, which frees room). False if the machine holds no
    committed usage (then only the held growth is given back)."""
    release_growth(session, server_uuid, held.get("ram_mb", 0), held.get("disk_mb", 0),
                   held.get("cpu", 0))
    res = session.scalars(
        select(Reservation).where(Reservation.machine_uuid == machine_uuid,
                                  Reservation.state == "committed")
        .with_for_update()
    ).one_or_none()
    if res is None:
        return False
    res.ram_mb += delta.get("ram_mb", 0)
    res.disk_mb += delta.get("disk_mb", 0)
    res.cpu += delta.get("cpu", 0)
    session.execute(
        update(Server).where(Server.uuid == res.server_uuid)
        .values(ram_committed_mb=Server.ram_committed_mb + delta.get("ram_mb", 0),
                disk_committed_mb=Server.disk_committed_mb + delta.get("disk_mb", 0),
                cpu_committed=Server.cpu_committed + delta.get("cpu", 0))
        .execution_options(synchronize_session=False)
    )
    return True
