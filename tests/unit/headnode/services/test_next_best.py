"""A create that loses the race for its winner's room tries the decision's next best before
it reads the fleet again (real PostgreSQL; the race is a real concurrent transaction that
takes the winner's RAM between the create's snapshot and its reservation); and the
operator's placement settings reach creates, dry runs, capacity reports and what-ifs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, text, update

from headnode.services import machines as svc
from headnode.services import placement, planning
from headnode.services.context import ServiceContext
from headnode.services.errors import InsufficientCapacity
from headnode.store.models import Server
from tests.unit.headnode.services.conftest import (
    make_account,
    make_image,
    make_package,
    make_server,
    server_row,
)

CALLER = {"type": "operator"}


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
def fleet(ctx: Any) -> dict[str, Any]:
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
def race(ctx: Any, fleet: dict[str, Any]) -> Iterator[Any]:
    engine = ctx.sessions.kw["bind"]
    races: list[Race] = []

    def start(*take: str) -> Race:
        r = Race(engine, [fleet[name] for name in take])
        event.listen(engine, "after_cursor_execute", r.seen)
        races.append(r)
        return r

    yield start
    for r in races:
        event.remove(engine, "after_cursor_execute", r.seen)


def create(ctx: Any) -> dict[str, Any]:
    return svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                    "image": "base-64"}, CALLER)


def test_a_lost_race_takes_the_next_best_without_reading_the_fleet_again(
        ctx: Any, fleet: dict[str, Any], race: Any) -> None:
    lost = race("empty")
    answer = create(ctx)
    assert answer["server_uuid"] == fleet["half"]
    assert lost.count(is_snapshot) == 1  # one read of the fleet
    assert lost.count(is_guard) == 2  # the winner's refusal, then the next best's
    assert server_row(ctx, fleet["half"]).ram_inflight_mb == 28000 + 1024


def test_when_every_candidate_is_lost_the_fleet_is_read_again(
        ctx: Any, fleet: dict[str, Any], race: Any) -> None:
    lost = race("empty", "half", "full")
    with pytest.raises(InsufficientCapacity) as refused:
        create(ctx)
    # the fresh snapshot names the real reason
    assert refused.value.reasons == {"lack RAM": 3}
    assert lost.count(is_snapshot) == 2
    assert lost.count(is_guard) == 3  # the winner and both of its next best
    with ctx.read() as session:
        assert session.execute(text("SELECT count(*) FROM reservations")).scalar() == 0


def test_a_create_that_wins_sends_the_statements_it_always_did(
        ctx: Any, fleet: dict[str, Any], race: Any) -> None:
    quiet = race()  # the other transaction takes nothing
    answer = create(ctx)
    assert answer["server_uuid"] == fleet["empty"]
    assert quiet.count(is_snapshot) == 1 and quiet.count(is_guard) == 1


def with_settings(ctx: Any, **changes: Any) -> Any:
    return ServiceContext(dataclasses.replace(ctx.settings, **changes), jobs=ctx.jobs,
                          _sessions=ctx.sessions)


def test_the_operators_strategy_reaches_the_create_and_the_dry_run(
        ctx: Any, fleet: dict[str, Any]) -> None:
    packing = with_settings(ctx, placement_strategy="pack", weight_uniform_random=0.0)
    asked = {"owner": "alice", "package": "small", "image": "base-64"}
    dry = placement.dry_run(packing, asked)
    assert dry["server_uuid"] == fleet["full"]
    assert dry["next_best"] == [fleet["half"], fleet["empty"]]
    assert create(packing)["server_uuid"] == fleet["full"]
    assert create(ctx)["server_uuid"] == fleet["empty"]  # the default spreads


def test_the_overprovision_ratio_reaches_the_reservations_guard(
        ctx: Any, fleet: dict[str, Any]) -> None:
    """With RAM promised twice over, the full server's 50 GB count as 25: it takes a
    machine the default ratio would refuse, and the guard agrees with the filter."""
    big = make_package(ctx, name="big", memory=20000, disk=10240)
    overprovisioned = with_settings(ctx, ram_overprovision=2.0, placement_strategy="pack",
                                    weight_uniform_random=0.0)
    answer = svc.create_machine(overprovisioned, {"owner": "alice", "package": big.name,
                                                  "image": "base-64"}, CALLER)
    assert answer["server_uuid"] == fleet["full"]
    assert server_row(ctx, fleet["full"]).ram_inflight_mb == 50000 + 20000


def test_the_what_if_places_as_the_settings_say(ctx: Any, fleet: dict[str, Any]) -> None:
    body = {"place": [{"package": "small", "count": 2}]}
    packing = with_settings(ctx, placement_strategy="pack")
    assert planning.simulate(packing, body)["placements"][0]["servers"] == {"full": 2}
    assert planning.simulate(ctx, body)["placements"][0]["servers"] == {"empty": 2}
    # capacity reports leave out what the settings' filters leave out: the head node
    make_server(ctx, hostname="hn", headnode=True)
    default_fits = planning.report(ctx)["packages"][0]["fits"]
    everywhere = with_settings(ctx, placement_filters="traits,backend,affinity")
    assert planning.report(everywhere)["packages"][0]["fits"] > default_fits
