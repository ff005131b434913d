"""The pipeline: funnel, scoring, explanation, packing counts, and its properties."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headnode.placement import filters as f
from headnode.placement.affinity import parse_rules
from headnode.placement.allocator import allocate
from headnode.placement.pipeline import DEFAULT_PIPELINE, Decision
from headnode.placement.state import (
    Context,
    MachineRef,
    PlacementRequest,
    Policy,
    ServerState,
    Snapshot,
    unreserved_cpu,
    unreserved_disk,
    unreserved_ram,
    with_machine,
)
from tests.unit.headnode.placement.conftest import POLICY, REQ, server

#: no random scorer: the same snapshot gets the same answer
FIXED = DEFAULT_PIPELINE.with_weights(uniform_random=0)


def decide(fleet: list[ServerState], request: PlacementRequest = REQ,
           machines: tuple[MachineRef, ...] = (), policy: Policy = POLICY) -> Decision:
    return FIXED.decide(Snapshot(fleet, machines), request, policy)


def test_funnel_counts_each_step_in_order() -> None:
    fleet = [server("a", setup=False), server("b", status="unknown"),
             server("c", ram_mb=1024), server("d", ram_mb=1024), server("e")]
    decision = decide(fleet)
    assert decision.server is not None and decision.server.uuid == "e"
    removed = {st.name: st.removed for st in decision.steps}
    assert removed["setup"] == 1 and removed["running"] == 1 and removed["min-ram"] == 2
    assert [st.name for st in decision.steps] == [h.name for h in f.DEFAULT_FILTERS]
    assert decision.steps[-1].remaining == 1
    assert decision.considered == 5


def test_first_failing_step_takes_the_server() -> None:
    decision = decide([server(setup=False, status="unknown", ram_mb=1)])
    assert decision.server is None and decision.reasons == {f.NOT_SETUP: 1}


def test_explain_sums_up_the_refusal() -> None:
    fleet = ([server(f"r{i}", ram_mb=32768) for i in range(12)]
             + [server(f"n{i}", setup=False) for i in range(3)])
    request = PlacementRequest(ram_mb=64 * 1024, disk_mb=10240)
    decision = decide(fleet, request)
    assert decision.server is None
    assert decision.explain(request) == (
        "no server can fit 64 GiB of RAM and 10 GiB of disk: 12 lack RAM, 3 are not set up")
    answer = decision.to_dict(request)
    assert answer["server_uuid"] is None and answer["reasons"] == {
        "lack RAM": 12, "are not set up": 3}


def test_explain_empty_fleet_and_success() -> None:
    assert decide([]).explain(REQ) == ("no server can fit 1 GiB of RAM and 10 GiB of disk: "
                                       "there are no servers")
    assert decide([server("s1", hostname="cn7")]).explain(REQ) == (
        "placed on cn7 (1 servers considered)")


def test_picks_most_unreserved_ram() -> None:
    fleet = [server("a", ram_mb=65536, ram_used_mb=40000),
             server("b", ram_mb=32768),
             server("c", ram_mb=65536, ram_used_mb=20000),
             server("d", ram_mb=131072, setup=False)]
    decision = decide(fleet)
    assert decision.server is not None and decision.server.uuid == "c"
    assert set(decision.scores) == {"unreserved-ram", "unreserved-disk", "owner-spread",
                                    "soft-affinity"}


def test_ties_go_to_the_smallest_uuid_whatever_the_order() -> None:
    fleet = [server(u) for u in ("m", "c", "x", "f")]
    for order in (fleet, fleet[::-1], fleet[2:] + fleet[:2]):
        decision = decide(order)
        assert decision.server is not None and decision.server.uuid == "c"


def test_owner_spread_and_soft_affinity_steer_the_choice() -> None:
    fleet = [server("a"), server("b")]
    machines = (MachineRef("a", "web1"),)
    spread = decide(fleet, REQ, machines)
    assert spread.server is not None and spread.server.uuid == "b"
    near = dataclasses.replace(REQ, affinity=parse_rules(["instance==~web1"]))
    together = decide(fleet, near, machines)
    assert together.server is not None and together.server.uuid == "a"


def test_hard_affinity_refuses_with_its_reason() -> None:
    request = dataclasses.replace(REQ, affinity=parse_rules(["instance!=web*"]))
    machines = (MachineRef("a", "web1"), MachineRef("b", "web2"))
    decision = decide([server("a"), server("b")], request, machines)
    assert decision.server is None and decision.reasons == {f.AFFINITY: 2}


def test_random_scorer_spreads_equal_servers() -> None:
    fleet = [server(str(i)) for i in range(10)]
    rng = random.Random(3)
    chosen = {DEFAULT_PIPELINE.decide(Snapshot(fleet), REQ, POLICY, rng).server.uuid  # type: ignore[union-attr]
              for _ in range(50)}
    assert len(chosen) > 3


def test_with_weights_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="no scorer named nope"):
        DEFAULT_PIPELINE.with_weights(nope=1)


def test_allocate_is_the_pipeline() -> None:
    decision = allocate([server("a"), server("b", setup=False)], REQ,
                        rng=random.Random(1))
    assert decision.server is not None and decision.server.uuid == "a"


def test_room_for_is_the_tightest_resource() -> None:
    # RAM: 10000 * 0.85 = 8500 -> 8 of 1024; disk: 94000 / 10240 -> 9; count: 224
    assert FIXED.room_for(server(ram_mb=10000, disk_mb=100_000), REQ, POLICY) == 8
    assert FIXED.room_for(server(ram_mb=10000, disk_mb=50_000), REQ, POLICY) == 4
    assert FIXED.room_for(server(machine_count=222), REQ, POLICY) == 2
    capped = dataclasses.replace(REQ, cpu_cap=300)  # 2 CPUs: 800 shares -> 2
    assert FIXED.room_for(server(cpus=2), capped, POLICY) == 2
    assert FIXED.room_for(server(uncapped_count=1), capped, POLICY) == 0
    assert FIXED.room_for(server(setup=False), REQ, POLICY) == 0


# -- properties -------------------------------------------------------------------------------

servers_st = st.builds(
    ServerState,
    uuid=st.uuids().map(str),
    status=st.sampled_from(["running", "unknown"]),
    setup=st.booleans(),
    reserved=st.booleans(),
    headnode=st.booleans(),
    backend=st.sampled_from(["sim", "linux", "smartos"]),
    traits=st.sampled_from([{}, {"ssd": True}, {"ssd": False}]),
    ram_mb=st.integers(0, 262_144),
    cpus=st.integers(0, 64),
    disk_mb=st.integers(0, 4_000_000),
    ram_used_mb=st.integers(0, 262_144),
    disk_used_mb=st.integers(0, 4_000_000),
    cpu_used=st.integers(0, 20_000),
    images_mb=st.integers(0, 50_000),
    machine_count=st.integers(0, 300),
    capped_count=st.integers(0, 2),
    uncapped_count=st.integers(0, 2),
)
requests_st = st.builds(
    PlacementRequest,
    ram_mb=st.integers(1, 131_072),
    disk_mb=st.integers(1, 1_000_000),
    cpu_cap=st.sampled_from([0, 0, 50, 100, 400]),
    traits=st.sampled_from([{}, {"ssd": True}]),
    image_os=st.sampled_from(["smartos", "linux"]),
    image_type=st.sampled_from(["zone-dataset", "lx-dataset"]),
)


@settings(max_examples=200, deadline=None)
@given(fleet=st.lists(servers_st, max_size=12), request=requests_st, seed=st.integers())
def test_chosen_server_passes_every_hard_filter(fleet: list[ServerState],
                                                request: PlacementRequest, seed: int) -> None:
    decision = DEFAULT_PIPELINE.decide(Snapshot(fleet), request, POLICY, random.Random(seed))
    removed = sum(decision.reasons.values())
    if decision.server is None:
        assert removed == len(fleet)
        return
    ctx = Context.build(request, ())
    assert all(h.passes(decision.server, request, POLICY, ctx) for h in f.DEFAULT_FILTERS)
    assert removed < len(fleet)


empty_servers_st = st.builds(
    ServerState,
    uuid=st.uuids().map(str),
    ram_mb=st.integers(0, 65_536),
    cpus=st.integers(0, 8),
    disk_mb=st.integers(0, 400_000),
)
small_requests_st = st.builds(
    PlacementRequest,
    ram_mb=st.integers(1, 16_384),
    disk_mb=st.integers(1, 100_000),
    cpu_cap=st.sampled_from([0, 100, 250]),
)


def within_capacity(s: ServerState, policy: Policy) -> bool:
    return (unreserved_ram(s, policy) >= 0 and unreserved_disk(s, policy) >= 0
            and (s.uncapped_count == 0 or s.capped_count == 0)
            and (s.capped_count == 0 or unreserved_cpu(s, policy) >= 0)
            and s.machine_count <= policy.max_machines)


@settings(max_examples=100, deadline=None)
@given(fleet=st.lists(empty_servers_st, min_size=1, max_size=6, unique_by=lambda s: s.uuid),
       requests=st.lists(small_requests_st, max_size=60), max_machines=st.integers(1, 8),
       seed=st.integers())
def test_no_sequence_of_allocations_overcommits(fleet: list[ServerState],
                                                requests: list[PlacementRequest],
                                                max_machines: int, seed: int) -> None:
    policy = Policy(max_machines=max_machines)
    rng = random.Random(seed)
    state = {s.uuid: s for s in fleet}
    for request in requests:
        decision = DEFAULT_PIPELINE.decide(Snapshot(list(state.values())), request, policy, rng)
        if decision.server is None:
            continue
        state[decision.server.uuid] = with_machine(state[decision.server.uuid], request)
        assert all(within_capacity(s, policy) for s in state.values())


@settings(max_examples=150, deadline=None)
@given(srv=empty_servers_st, request=small_requests_st, used=st.integers(0, 30_000))
def test_room_for_matches_placing_one_by_one(srv: ServerState, request: PlacementRequest,
                                             used: int) -> None:
    srv = dataclasses.replace(srv, ram_used_mb=used)
    policy = Policy(max_machines=40)
    ctx = Context.build(request, ())
    placed, current = 0, srv
    while all(h.passes(current, request, policy, ctx) for h in f.DEFAULT_FILTERS):
        current = with_machine(current, request)
        placed += 1
    assert FIXED.room_for(srv, request, policy) == placed


@settings(max_examples=150, deadline=None)
@given(srv=empty_servers_st, request=small_requests_st, image_mb=st.integers(0, 50_000),
       holds=st.booleans(), used=st.integers(0, 30_000))
def test_room_for_counts_a_new_image_once(srv: ServerState, request: PlacementRequest,
                                          image_mb: int, holds: bool, used: int) -> None:
    """A request that brings an image: the first machine also takes the image's size (unless
    the server holds it), the later ones do not; room_for agrees with placing one by one."""
    srv = dataclasses.replace(srv, disk_used_mb=used,
                              images=frozenset({"img"}) if holds else frozenset())
    request = dataclasses.replace(request, image_uuid="img", image_mb=image_mb)
    policy = Policy(max_machines=40)
    ctx = Context.build(request, ())
    placed, current = 0, srv
    while all(h.passes(current, request, policy, ctx) for h in f.DEFAULT_FILTERS):
        current = with_machine(current, request)
        placed += 1
    assert FIXED.room_for(srv, request, policy) == placed
    assert current.images_mb == srv.images_mb + (image_mb if placed and not holds else 0)
