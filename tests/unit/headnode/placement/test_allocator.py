"""The allocator: each hard filter alone, the scorer, the explanation, and two properties."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from headnode.placement import allocator as a
from headnode.placement.allocator import (
    DEFAULT_FILTERS,
    Decision,
    PlacementRequest,
    Policy,
    ServerState,
    allocate,
)

POLICY = Policy()
REQ = PlacementRequest(ram_mb=1024, disk_mb=10240, owner_uuid="owner")


def server(uuid: str = "s1", **overrides: object) -> ServerState:
    attrs: dict[str, object] = {"ram_mb": 65536, "disk_mb": 1_000_000}
    attrs.update(overrides)
    return ServerState(uuid=uuid, **attrs)  # type: ignore[arg-type]


# -- one filter at a time ---------------------------------------------------------------------


def test_filter_excluded() -> None:
    s = server("s1")
    assert a.filter_excluded(s, REQ, POLICY) is None
    excluding = dataclasses.replace(REQ, exclude=frozenset({"s1"}))
    assert a.filter_excluded(s, excluding, POLICY) == a.EXCLUDED


def test_filter_setup() -> None:
    assert a.filter_setup(server(setup=True), REQ, POLICY) is None
    assert a.filter_setup(server(setup=False), REQ, POLICY) == a.NOT_SETUP


def test_filter_running() -> None:
    assert a.filter_running(server(status="running"), REQ, POLICY) is None
    assert a.filter_running(server(status="unknown"), REQ, POLICY) == a.NOT_RUNNING


def test_filter_reserved() -> None:
    assert a.filter_reserved(server(reserved=False), REQ, POLICY) is None
    assert a.filter_reserved(server(reserved=True), REQ, POLICY) == a.RESERVED


def test_filter_headnode() -> None:
    assert a.filter_headnode(server(headnode=False), REQ, POLICY) is None
    assert a.filter_headnode(server(headnode=True), REQ, POLICY) == a.HEADNODE
    allow = Policy(allow_headnode=True)
    assert a.filter_headnode(server(headnode=True), REQ, allow) is None


def test_filter_machine_count() -> None:
    p = Policy(max_machines=3)
    assert a.filter_machine_count(server(machine_count=2), REQ, p) is None
    assert a.filter_machine_count(server(machine_count=3), REQ, p) == a.TOO_MANY_MACHINES


def test_filter_ram_keeps_the_reservation() -> None:
    # 10000 MiB * 0.85 = 8500 usable
    assert a.filter_ram(server(ram_mb=10000, ram_used_mb=7476), REQ, POLICY) is None
    assert a.filter_ram(server(ram_mb=10000, ram_used_mb=7477), REQ, POLICY) == a.NOT_ENOUGH_RAM
    # an empty server too small once its 15 % is kept back
    assert a.filter_ram(server(ram_mb=1200), REQ, POLICY) == a.NOT_ENOUGH_RAM


def test_filter_disk_keeps_the_pool_margin() -> None:
    # 100000 MiB * 0.94 = 94000 usable
    ok = server(disk_mb=100_000, disk_used_mb=94_000 - 10240)
    assert a.filter_disk(ok, REQ, POLICY) is None
    full = server(disk_mb=100_000, disk_used_mb=94_000 - 10239)
    assert a.filter_disk(full, REQ, POLICY) == a.NOT_ENOUGH_DISK


def test_first_failing_filter_is_the_reason() -> None:
    decision = allocate([server(setup=False, status="unknown", ram_mb=1)], REQ)
    assert decision.server is None
    assert decision.reasons == {a.NOT_SETUP: 1}


# -- scoring ----------------------------------------------------------------------------------


def test_picks_most_unreserved_ram() -> None:
    fleet = [
        server("a", ram_mb=65536, ram_used_mb=40000),
        server("b", ram_mb=32768, ram_used_mb=0),  # 27852 unreserved
        server("c", ram_mb=65536, ram_used_mb=20000),  # 35705 unreserved: the emptiest
        server("d", ram_mb=131072, setup=False),  # biggest, but filtered out
    ]
    decision = allocate(fleet, REQ)
    assert decision.server is not None and decision.server.uuid == "c"
    assert decision.considered == 4
    assert decision.reasons == {a.NOT_SETUP: 1}


def test_ties_go_to_the_smallest_uuid_whatever_the_order() -> None:
    fleet = [server(u) for u in ("m", "c", "x", "f")]
    for order in (fleet, list(reversed(fleet)), fleet[2:] + fleet[:2]):
        decision = allocate(order, REQ)
        assert decision.server is not None and decision.server.uuid == "c"


def test_explain_counts_each_reason() -> None:
    fleet = [server(f"r{i}", ram_mb=1024) for i in range(3)] + [server("n", setup=False)]
    decision = allocate(fleet, REQ)
    assert decision.server is None
    text = decision.explain(REQ)
    assert "3 not enough RAM, 1 not set up" in text
    assert "1024 MiB of RAM" in text and "10240 MiB of disk" in text


def test_explain_empty_fleet() -> None:
    decision = allocate([], REQ)
    assert decision.server is None and decision.considered == 0
    assert decision.explain(REQ) == "no server can fit the machine: there are no servers"


def test_explain_success_names_the_server() -> None:
    decision = allocate([server("s1", hostname="cn7")], REQ)
    assert decision.explain(REQ) == "placed on cn7"
    assert Decision(server=server("s2"), considered=1).explain(REQ) == "placed on s2"


# -- properties -------------------------------------------------------------------------------

servers_st = st.builds(
    ServerState,
    uuid=st.uuids().map(str),
    status=st.sampled_from(["running", "unknown"]),
    setup=st.booleans(),
    reserved=st.booleans(),
    headnode=st.booleans(),
    ram_mb=st.integers(0, 262_144),
    disk_mb=st.integers(0, 4_000_000),
    ram_used_mb=st.integers(0, 262_144),
    disk_used_mb=st.integers(0, 4_000_000),
    machine_count=st.integers(0, 300),
)
requests_st = st.builds(PlacementRequest, ram_mb=st.integers(1, 131_072),
                        disk_mb=st.integers(1, 1_000_000))


@settings(max_examples=200, deadline=None)
@given(fleet=st.lists(servers_st, max_size=12), request=requests_st)
def test_chosen_server_passes_every_filter(fleet: list[ServerState],
                                           request: PlacementRequest) -> None:
    decision = allocate(fleet, request, POLICY)
    assert decision.considered == len(fleet)
    if decision.server is None:
        assert sum(decision.reasons.values()) == len(fleet)
        return
    assert all(f(decision.server, request, POLICY) is None for f in DEFAULT_FILTERS)
    assert sum(decision.reasons.values()) < len(fleet)


empty_servers_st = st.builds(
    ServerState,
    uuid=st.uuids().map(str),
    ram_mb=st.integers(0, 65_536),
    disk_mb=st.integers(0, 400_000),
)


@settings(max_examples=100, deadline=None)
@given(fleet=st.lists(empty_servers_st, min_size=1, max_size=6, unique_by=lambda s: s.uuid),
       requests=st.lists(requests_st.map(lambda r: dataclasses.replace(
           r, ram_mb=r.ram_mb % 16_384 + 1, disk_mb=r.disk_mb % 100_000 + 1)), max_size=60),
       max_machines=st.integers(1, 8))
def test_applying_decisions_never_overcommits(fleet: list[ServerState],
                                              requests: list[PlacementRequest],
                                              max_machines: int) -> None:
    policy = Policy(max_machines=max_machines)
    state = {s.uuid: s for s in fleet}
    for request in requests:
        decision = allocate(state.values(), request, policy)
        if decision.server is None:
            continue
        chosen = state[decision.server.uuid]
        state[chosen.uuid] = dataclasses.replace(
            chosen,
            ram_used_mb=chosen.ram_used_mb + request.ram_mb,
            disk_used_mb=chosen.disk_used_mb + request.disk_mb,
            machine_count=chosen.machine_count + 1,
        )
        for s in state.values():
            assert s.ram_used_mb <= s.ram_mb * (1 - policy.reservation_ratio)
            assert s.disk_used_mb <= s.disk_mb * policy.pool_usable_ratio
            assert s.machine_count <= policy.max_machines
