"""A decision's parts at their edges: the sizes it prints, its answer's every field, the
settings that build a pipeline, the random visiting order's spread, scorers over empty or
tiny rooms. Each pins what mutation testing (bench/mutation.py) found unpinned."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Sequence

import pytest

from headnode.placement import scorers as sc
from headnode.placement.affinity import parse_rules
from headnode.placement.allocator import allocate
from headnode.placement.pipeline import (
    DEFAULT_PIPELINE,
    Decision,
    Pipeline,
    StepResult,
    _visit_order,
    configured,
    fmt_mib,
)
from headnode.placement.state import (
    Context,
    MachineRef,
    PlacementRequest,
    Policy,
    ServerState,
    Snapshot,
)
from tests.unit.headnode.placement.conftest import POLICY, REQ, context, server

RNG = random.Random(11)
#: no random scorer: the same snapshot gets the same answer
FIXED = DEFAULT_PIPELINE.with_weights(uniform_random=0)

# -- what a decision says -------------------------------------------------------------------


@pytest.mark.parametrize(("mib", "shown"), [
    (0, "0 MiB"),
    (512, "512 MiB"),
    (1023, "1023 MiB"),
    (1024, "1 GiB"),
    (1536, "1.5 GiB"),
    (100 * 1024 + 512, "100.5 GiB"),
    (64 * 1024, "64 GiB"),
])
def test_sizes_print_in_mib_below_a_gib_and_in_gib_from_one(mib: int, shown: str) -> None:
    assert fmt_mib(mib) == shown


def test_a_refusal_names_the_cpu_share_and_the_nic_tags_after_ram_and_disk() -> None:
    request = dataclasses.replace(REQ, cpu_cap=50, nic_tags=frozenset({"external", "admin"}))
    refused = Decision(server=None, considered=0)
    assert refused.explain(request) == (
        "no server can fit 1 GiB of RAM and 10 GiB of disk and 50 % of a CPU "
        "on nic tags admin, external: there are no servers")


def test_a_placement_from_a_sample_says_so() -> None:
    sampled = Decision(server=server("s1", hostname="cn1"), considered=100, sampled=True)
    assert sampled.explain(REQ) == (
        "placed on cn1 (100 servers considered, a random sample of the fleet)")


def test_the_answer_of_a_placement_has_every_field() -> None:
    step = StepResult("setup", "are not set up", 1, 3)
    decision = Decision(server=server("s1", hostname="cn1"), considered=4, steps=[step],
                        scores={"unreserved-ram": 2.0}, next_best=[server("s2")])
    request = dataclasses.replace(REQ, nic_tags=frozenset({"external", "admin"}))
    assert decision.to_dict(request) == {
        "server_uuid": "s1",
        "hostname": "cn1",
        "considered": 4,
        "steps": [{"name": "setup", "reason": "are not set up", "removed": 1, "remaining": 3}],
        "reasons": {"are not set up": 1},
        "scores": {"unreserved-ram": 2.0},
        "next_best": ["s2"],
        "nic_tags": ["admin", "external"],
        "message": "placed on cn1 (4 servers considered)",
    }
    refused = Decision(server=None, considered=0).to_dict(REQ)
    assert refused["server_uuid"] is None and refused["hostname"] is None


def test_the_winners_scores_are_weighted_and_kept_to_six_decimals() -> None:
    # a: all the RAM, a third of b's disk; b: a tenth of a's RAM, all the disk
    fleet = [server("a", ram_mb=100_000, disk_mb=100_000),
             server("b", ram_mb=10_000, disk_mb=300_000)]
    decision = FIXED.decide(Snapshot(fleet), REQ, POLICY)
    assert decision.server is not None and decision.server.uuid == "a"
    assert decision.scores == {"unreserved-ram": 2.0, "unreserved-disk": 0.333333,
                               "owner-spread": 1.0, "soft-affinity": 0.0}


def test_a_scorer_weighted_zero_leaves_the_ones_after_it_counting() -> None:
    fleet = [server("a"), server("b")]
    no_room = FIXED.with_weights(unreserved_ram=0, unreserved_disk=0)
    decision = no_room.decide(Snapshot(fleet, (MachineRef("a", "m1"),)), REQ, POLICY)
    assert decision.server is not None and decision.server.uuid == "b"
    assert set(decision.scores) == {"owner-spread", "soft-affinity"}


def test_a_scorer_is_given_the_request_the_policy_and_the_random_source() -> None:
    given: list[tuple[object, ...]] = []

    def recording(servers: Sequence[ServerState], r: PlacementRequest, p: Policy,
                  c: Context, rng: random.Random) -> list[float]:
        given.append((r, p, rng))
        return [0.0] * len(servers)

    rng = random.Random(1)
    Pipeline(scorers=(sc.Scorer("recording", 1.0, recording),)).decide(
        Snapshot([server("a")]), REQ, POLICY, rng)
    assert given == [(REQ, POLICY, rng)]


def test_a_snapshots_owner_counts_steer_the_owner_spread() -> None:
    fleet = [server("a"), server("b")]
    crowded = Snapshot(fleet, owner_counts={"a": 3})
    chosen = FIXED.decide(crowded, REQ, POLICY).server
    assert chosen is not None and chosen.uuid == "b"


# -- building pipelines ---------------------------------------------------------------------


def test_the_settings_candidate_limit_reaches_the_pipeline() -> None:
    assert configured([], {}, sc.SPREAD, candidates=100).candidates == 100
    assert Pipeline(candidates=100).visiting_all().candidates == 0


def test_unknown_weights_are_named_all_in_order() -> None:
    with pytest.raises(ValueError) as refused:
        DEFAULT_PIPELINE.with_weights(foo=1, bar=2)
    assert str(refused.value) == "no scorer named bar, foo"


def test_allocate_passes_the_owners_machines_and_the_random_source() -> None:
    fleet = [server(f"s{i:02d}") for i in range(20)]
    near_db = dataclasses.replace(REQ, affinity=parse_rules(["instance==db1"]))
    chosen = allocate(fleet, near_db, owner_machines=[MachineRef("s13", "db1")]).server
    assert chosen is not None and chosen.uuid == "s13"
    # equal servers: the random scorer alone decides, so a seed decides as the pipeline's
    for seed in range(10):
        mine = allocate(fleet, REQ, rng=random.Random(seed)).server
        same = DEFAULT_PIPELINE.decide(Snapshot(fleet), REQ, Policy(), random.Random(seed))
        assert mine == same.server


# -- the random visiting order --------------------------------------------------------------


def starts_and_strides(n: int, draws: int) -> tuple[Counter[int], Counter[int]]:
    """The first server and the step to the second of ``draws`` seeded orders of ``n``."""
    fleet = [server(f"s{i}") for i in range(n)]
    starts, strides = Counter[int](), Counter[int]()
    for seed in range(draws):
        order = [int(s.uuid[1:]) for s in _visit_order(fleet, [], random.Random(seed))]
        starts[order[0]] += 1
        strides[(order[1] - order[0]) % n] += 1
    return starts, strides


@pytest.mark.parametrize("n", [3, 4, 5, 6])
def test_every_start_and_every_stride_prime_to_the_fleet_are_about_equally_likely(
        n: int) -> None:
    draws = 1200
    starts, strides = starts_and_strides(n, draws)
    coprime = [k for k in range(1, n) if math.gcd(k, n) == 1]
    assert sorted(starts) == list(range(n)) and sorted(strides) == coprime
    for counter, kinds in ((starts, n), (strides, len(coprime))):
        expected = draws / kinds
        assert all(abs(c - expected) < 0.15 * expected for c in counter.values()), counter


# -- scorers --------------------------------------------------------------------------------


def test_room_scores_are_zero_when_no_server_has_room_and_scale_up_small_rooms() -> None:
    empty = [server("a", ram_mb=0), server("b", ram_mb=0)]
    assert sc.score_unreserved_ram(empty, REQ, POLICY, context(), RNG) == [0.0, 0.0]
    # 1 MiB less 15 %: 0.85 MiB of room is the most, so it scores 1
    tiny = [server("a", ram_mb=1), server("b", ram_mb=0)]
    assert sc.score_unreserved_ram(tiny, REQ, POLICY, context(), RNG) == [1.0, 0.0]


def test_packing_disk_scores_mirror_spreading_ones() -> None:
    fleet = [server("a", disk_mb=100_000, images_mb=47_000), server("b", disk_mb=100_000)]
    assert sc.score_least_unreserved_disk(fleet, REQ, POLICY, context(), RNG) == [0.5, 0.0]


def test_no_servers_get_no_scores() -> None:
    for score in (sc.score_owner_spread, sc.score_unreserved_ram, sc.score_unreserved_disk):
        assert score([], REQ, POLICY, context(), RNG) == []
