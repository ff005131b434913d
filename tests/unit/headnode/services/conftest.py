"""Builders for service and workflow tests on the real PostgreSQL of tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from headnode.store.models import Job, Machine, Reservation, Server
from tests.unit.headnode.api.conftest import (
    add,
    count,
    make_account,
    make_image,
    make_machine,
    make_package,
    make_server,
)

__all__ = ["add", "count", "make_account", "make_image", "make_package", "make_server",
           "make_machine", "server_row", "written"]


def server_row(ctx: Any, uuid: str) -> Server:
    with ctx.read() as session:
        server = session.get(Server, uuid)
        assert server is not None
        return server


def written(ctx: Any) -> tuple[int, int, int]:
    """How many machines, jobs and reservations exist."""
    return count(ctx, Machine), count(ctx, Job), count(ctx, Reservation)


def reservation_states(ctx: Any) -> dict[str, int]:
    with ctx.read() as session:
        rows = session.execute(
            select(Reservation.state, func.count()).group_by(Reservation.state)).all()
        return {state: int(n) for state, n in rows}


@pytest.fixture
def fleet(ctx: Any) -> dict[str, Any]:
    """One set-up server, an active package, an image and an account."""
    return {
        "server": make_server(ctx, hostname="cn1"),
        "package": make_package(ctx, name="small", memory=1024, disk=10240, cpu_cap=100),
        "image": make_image(ctx, name="base-64"),
        "owner": make_account(ctx, login="alice"),
    }


# -- a three-server fleet and a real concurrent transaction racing a create for it ----


class Race:
    """Statements the create sends; right after its fleet snapshot, another transaction
    (its own connection, committed) fills the servers named in ``take``."""

    def __init__(self, engine: Any, take: list[str]) -> None:
        self.engine, self.take = engine, take
        self.statements: list[str] = []
        self.raced = self.racing = False

    def seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        """After each statement has run (so the snapshot was taken before the race)."""
        if self.racing:
            return  # the other transaction's own
        self.statements.append(" ".join(statement.split()))
        if self.raced or not is_snapshot(statement):
            return
        self.raced = self.racing = True
        try:
            with self.engine.begin() as other:
                other.execute(update(Server).where(Server.uuid.in_(self.take))
                              .values(ram_inflight_mb=Server.ram_mb))
        finally:
            self.racing = False

    def count(self, predicate: Any) -> int:
        return sum(1 for s in self.statements if predicate(s))


def is_snapshot(statement: str) -> bool:
    flat = " ".join(statement.split())
    # not the one server row an image claim locks first (FOR KEY SHARE): that is no read
    # of the fleet
    return (flat.startswith("SELECT servers.uuid") and "FROM servers" in flat
            and "FOR KEY SHARE" not in flat)


def is_guard(statement: str) -> bool:
    return statement.startswith("UPDATE servers SET ram_inflight_mb")


@pytest.fixture
def three_servers(ctx: Any) -> dict[str, Any]:
    """Three servers the spread default ranks empty > half > full, a package and image."""
    make_package(ctx, name="small", memory=1024, disk=10240)
    make_image(ctx, name="base-64")
    make_account(ctx, login="alice")
    return {"empty": make_server(ctx, hostname="empty").uuid,
            "half": make_server(ctx, hostname="half", ram_inflight_mb=28000,
                                disk_inflight_mb=500_000).uuid,
            "full": make_server(ctx, hostname="full", ram_inflight_mb=50000,
                                disk_inflight_mb=900_000).uuid}


@pytest.fixture
def race(ctx: Any, three_servers: dict[str, Any]) -> Iterator[Any]:
    engine = ctx.sessions.kw["bind"]
    races: list[Race] = []

    def start(*take: str) -> Race:
        r = Race(engine, [three_servers[name] for name in take])
        event.listen(engine, "after_cursor_execute", r.seen)
        races.append(r)
        return r

    yield start
    for r in races:
        event.remove(engine, "after_cursor_execute", r.seen)
