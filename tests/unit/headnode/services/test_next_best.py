"""A create that loses the race for its winner's room tries the decision's next best before
it reads the fleet again (real PostgreSQL; the race is a real concurrent transaction that
takes the winner's RAM between the create's snapshot and its reservation); and the
operator's placement settings reach creates, dry runs, capacity reports and what-ifs."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import text

from headnode.services import machines as svc
from headnode.services import placement, planning
from headnode.services.context import ServiceContext
from headnode.services.errors import InsufficientCapacity
from tests.unit.headnode.services.conftest import (
    is_guard,
    is_snapshot,
    make_package,
    make_server,
    server_row,
)

CALLER = {"type": "operator"}


def create(ctx: Any) -> dict[str, Any]:
    return svc.create_machine(ctx, {"owner": "alice", "package": "small",
                                    "image": "base-64"}, CALLER)


def test_a_lost_race_takes_the_next_best_without_reading_the_fleet_again(
        ctx: Any, three_servers: dict[str, Any], race: Any) -> None:
    lost = race("empty")
    answer = create(ctx)
    assert answer["server_uuid"] == three_servers["half"]
    assert lost.count(is_snapshot) == 1  # one read of the fleet
    assert lost.count(is_guard) == 2  # the winner's refusal, then the next best's
    assert server_row(ctx, three_servers["half"]).ram_inflight_mb == 28000 + 1024


def test_when_every_candidate_is_lost_the_fleet_is_read_again(
        ctx: Any, three_servers: dict[str, Any], race: Any) -> None:
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
        ctx: Any, three_servers: dict[str, Any], race: Any) -> None:
    quiet = race()  # the other transaction takes nothing
    answer = create(ctx)
    assert answer["server_uuid"] == three_servers["empty"]
    assert quiet.count(is_snapshot) == 1 and quiet.count(is_guard) == 1


def with_settings(ctx: Any, **changes: Any) -> Any:
    return ServiceContext(dataclasses.replace(ctx.settings, **changes), jobs=ctx.jobs,
                          _sessions=ctx.sessions)


def test_the_operators_strategy_reaches_the_create_and_the_dry_run(
        ctx: Any, three_servers: dict[str, Any]) -> None:
    packing = with_settings(ctx, placement_strategy="pack", weight_uniform_random=0.0)
    asked = {"owner": "alice", "package": "small", "image": "base-64"}
    dry = placement.dry_run(packing, asked)
    assert dry["server_uuid"] == three_servers["full"]
    assert dry["next_best"] == [three_servers["half"], three_servers["empty"]]
    assert create(packing)["server_uuid"] == three_servers["full"]
    assert create(ctx)["server_uuid"] == three_servers["empty"]  # the default spreads


def test_the_overprovision_ratio_reaches_the_reservations_guard(
        ctx: Any, three_servers: dict[str, Any]) -> None:
    """With RAM promised twice over, the full server's 50 GB count as 25: it takes a
    machine the default ratio would refuse, and the guard agrees with the filter."""
    big = make_package(ctx, name="big", memory=20000, disk=10240)
    overprovisioned = with_settings(ctx, ram_overprovision=2.0, placement_strategy="pack",
                                    weight_uniform_random=0.0)
    answer = svc.create_machine(overprovisioned, {"owner": "alice", "package": big.name,
                                                  "image": "base-64"}, CALLER)
    assert answer["server_uuid"] == three_servers["full"]
    assert server_row(ctx, three_servers["full"]).ram_inflight_mb == 50000 + 20000


def test_the_what_if_places_as_the_settings_say(ctx: Any, three_servers: dict[str, Any]) -> None:
    body = {"place": [{"package": "small", "count": 2}]}
    packing = with_settings(ctx, placement_strategy="pack")
    assert planning.simulate(packing, body)["placements"][0]["servers"] == {"full": 2}
    assert planning.simulate(ctx, body)["placements"][0]["servers"] == {"empty": 2}
    # capacity reports leave out what the settings' filters leave out: the head node
    make_server(ctx, hostname="hn", headnode=True)
    default_fits = planning.report(ctx)["packages"][0]["fits"]
    everywhere = with_settings(ctx, placement_filters="traits,backend,affinity")
    assert planning.report(everywhere)["packages"][0]["fits"] > default_fits
