"""SDC_PLACEMENT_CANDIDATES against the real PostgreSQL: creates decide on a random sample
of that many servers that fit, and still fall back to a fresh decision when the guard
refuses their pick; the operator's dry run and what-ifs visit every server."""

from __future__ import annotations

from typing import Any

import pytest

from headnode.services import placement, planning
from headnode.services.errors import InsufficientCapacity
from tests.unit.headnode.services.conftest import is_guard, is_snapshot, make_server, server_row
from tests.unit.headnode.services.test_next_best import create, with_settings


def test_the_setting_reaches_the_creates_pipeline(ctx: Any) -> None:
    assert placement.pipeline_for(ctx).candidates == ctx.settings.placement_candidates
    assert placement.pipeline_for(with_settings(ctx, placement_candidates=7)).candidates == 7


def test_a_pick_the_guard_refuses_is_decided_again_on_a_fresh_read(
        ctx: Any, three_servers: dict[str, str], race: Any) -> None:
    """With a limit of one there is no next best: whichever server the sample gave, if
    another provision took its room, the create reads the fleet again and decides on it."""
    one = with_settings(ctx, placement_candidates=1)
    lost = race("empty", "half")
    answer = create(one)
    assert answer["server_uuid"] == three_servers["full"]
    assert lost.count(is_snapshot) in (1, 2)  # 2 when the sample gave a taken server
    assert lost.count(is_guard) == lost.count(is_snapshot)
    assert server_row(ctx, three_servers["full"]).ram_inflight_mb == 50000 + 1024


def test_a_refusal_after_a_sample_names_every_server(
        ctx: Any, three_servers: dict[str, str], race: Any) -> None:
    one = with_settings(ctx, placement_candidates=1)
    race("empty", "half", "full")
    with pytest.raises(InsufficientCapacity) as refused:
        create(one)
    assert refused.value.reasons == {"lack RAM": 3}


def test_the_dry_run_and_the_what_if_visit_every_server(
        ctx: Any, three_servers: dict[str, str]) -> None:
    one = with_settings(ctx, placement_candidates=1, weight_uniform_random=0.0)
    make_server(ctx, hostname="down", status="unknown")
    dry = placement.dry_run(one, {"owner": "alice", "package": "small",
                                  "image": "base-64"})
    assert dry["considered"] == 4 and dry["server_uuid"] == three_servers["empty"]
    assert dry["next_best"] == [three_servers["half"], three_servers["full"]]
    assert dry["reasons"] == {"are not running": 1}
    body = {"place": [{"package": "small", "count": 3}]}
    assert planning.simulate(one, body)["placements"][0]["servers"] == {"empty": 3}
