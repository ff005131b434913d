"""Placement through the services on the real PostgreSQL: creates with the pipeline's
filters, the dry run, the capacity report and its packing counts, what-if simulations (which
never write) and the capacity history."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from headnode.placement.state import unreserved_cpu, unreserved_disk, unreserved_ram
from headnode.services import capacity, fleet, placement, planning
from headnode.services import machines as svc
from headnode.services.errors import InsufficientCapacity, InvalidArgument
from headnode.store.models import (
    Base,
    CapacitySnapshot,
    Reservation,
    Server,
    ServerImage,
    utcnow,
)
from tests.unit.headnode.services.conftest import (
    add,
    make_account,
    make_image,
    make_package,
    make_server,
    server_row,
    written,
)

CALLER = {"type": "operator"}


def create(ctx: Any, **body: Any) -> dict[str, Any]:
    full = {"owner": "alice", "package": "small", "image": "base-64", **body}
    return svc.create_machine(ctx, full, CALLER)


def table_contents(ctx: Any) -> dict[str, list[tuple[Any, ...]]]:
    with ctx.read() as session:
        return {t.name: sorted(tuple(map(repr, row))
                               for row in session.execute(select(t)).all())
                for t in Base.metadata.sorted_tables}


# -- creates go through the pipeline ----------------------------------------------------------


def test_capped_and_uncapped_never_share(ctx: Any, fleet: dict[str, Any]) -> None:
    make_package(ctx, name="uncapped", memory=1024, disk=10240, cpu_cap=0)
    capped = create(ctx)  # "small" is capped at 100 %
    with pytest.raises(InsufficientCapacity) as err:
        create(ctx, package="uncapped")
    assert err.value.reasons == {"would mix capped and uncapped machines": 1}
    row = server_row(ctx, capped["server_uuid"])
    assert (row.capped_count, row.uncapped_count) == (1, 0)


def test_cpu_shares_are_overprovisioned_four_times(ctx: Any, fleet: dict[str, Any]) -> None:
    # cn1: 16 CPUs * 100 % * 4 = 6400 shares: three machines capped at 2000 %, not four
    make_package(ctx, name="cpu-heavy", memory=1024, disk=1024, cpu_cap=2000)
    for _ in range(3):
        create(ctx, package="cpu-heavy")
    with pytest.raises(InsufficientCapacity) as err:
        create(ctx, package="cpu-heavy")
    assert err.value.reasons == {"lack CPU": 1}
    assert server_row(ctx, fleet["server"].uuid).cpu_inflight == 6000


def test_an_image_takes_pool_room_once_per_server(ctx: Any, fleet: dict[str, Any]) -> None:
    create(ctx)
    create(ctx)
    row = server_row(ctx, fleet["server"].uuid)
    assert row.images_mb == 300 and row.disk_inflight_mb == 2 * 10240
    with ctx.read() as session:
        assert session.scalars(select(ServerImage.image_uuid)).all() == [fleet["image"].uuid]


def test_a_new_image_that_does_not_fit_is_refused_as_lack_of_disk(
        ctx: Any, fleet: dict[str, Any]) -> None:
    # 10600 MiB pool * 0.94 = 9964 usable, 500 of them taken by the image "held": a 9000 MiB
    # quota fits from "held", not from a new 500 MiB image. The filter says so; before, it
    # chose the server, the guard refused, and the user read "taken by concurrent
    # provisions".
    tight = make_server(ctx, hostname="tight", disk_mb=10600, ram_mb=8192, images_mb=500)
    held = make_image(ctx, name="held", size_mb=500)
    add(ctx, ServerImage(server_uuid=tight.uuid, image_uuid=held.uuid, size_mb=500))
    make_image(ctx, name="new", size_mb=500)
    make_package(ctx, name="nine", memory=512, disk=9000, cpu_cap=100)
    with pytest.raises(InsufficientCapacity) as err:
        create(ctx, package="nine", image="new", server_uuid=tight.uuid)
    assert err.value.reasons == {"lack disk": 1}
    assert written(ctx) == (0, 0, 0)
    dry = placement.dry_run(ctx, {"package": "nine", "image": "new"})
    assert dry["server_uuid"] == fleet["server"].uuid  # the roomy one
    assert dry["reasons"] == {"lack disk": 1}
    assert create(ctx, package="nine", image="held",
                  server_uuid=tight.uuid)["server_uuid"] == tight.uuid
    assert server_row(ctx, tight.uuid).images_mb == 500  # nothing new to import


def test_image_room_is_part_of_the_guard(ctx: Any, fleet: dict[str, Any]) -> None:
    # 20000 MiB pool * 0.94 = 18800: one 10240 quota fits with a 300 MiB image, and a
    # 9000 MiB image next to it does not
    tight = make_server(ctx, hostname="tight", disk_mb=20000, ram_mb=8192)
    make_image(ctx, name="big", size_mb=9000)
    make_package(ctx, name="roomy", memory=512, disk=10240, cpu_cap=100)
    first = create(ctx, package="roomy", server_uuid=tight.uuid)
    assert first["server_uuid"] == tight.uuid
    with pytest.raises(InsufficientCapacity):
        create(ctx, package="roomy", image="big", server_uuid=tight.uuid)
    assert server_row(ctx, tight.uuid).images_mb == 300
    with ctx.read() as session:
        assert len(session.scalars(select(ServerImage)).all()) == 1


def test_traits_route_machines(ctx: Any, fleet: dict[str, Any]) -> None:
    ssd = make_server(ctx, hostname="ssd", traits={"ssd": True})
    make_package(ctx, name="fast", memory=1024, disk=1024, cpu_cap=100, traits={"ssd": True})
    assert create(ctx, package="fast")["server_uuid"] == ssd.uuid
    # a machine that asks for nothing stays off the server with traits
    for _ in range(3):
        assert create(ctx)["server_uuid"] == fleet["server"].uuid


def test_backend_must_run_the_image(ctx: Any, fleet: dict[str, Any]) -> None:
    # the Linux node is the emptiest (it would win on RAM), but runs no SmartOS zone
    linux = make_server(ctx, hostname="cn-linux", backend="linux", ram_mb=262_144)
    make_image(ctx, name="ubuntu", os="linux", type="lx-dataset")
    for _ in range(3):
        assert create(ctx)["server_uuid"] == fleet["server"].uuid
    with pytest.raises(InsufficientCapacity) as err:
        create(ctx, server_uuid=linux.uuid)
    assert err.value.reasons == {"cannot run the image's OS": 1}
    assert create(ctx, image="ubuntu")["server_uuid"] == linux.uuid


def test_hard_affinity_keeps_machines_apart(ctx: Any, fleet: dict[str, Any]) -> None:
    second = make_server(ctx, hostname="cn2")
    first = create(ctx, alias="web1", affinity=["instance!=web*"])
    other = create(ctx, alias="web2", affinity=["instance!=web*"])
    assert {first["server_uuid"], other["server_uuid"]} == {fleet["server"].uuid, second.uuid}
    before = written(ctx)
    with pytest.raises(InsufficientCapacity) as err:
        create(ctx, alias="web3", affinity=["instance!=web*"])
    assert err.value.reasons == {"break an affinity rule": 2}
    assert written(ctx) == before


def test_affinity_near_and_tags(ctx: Any, fleet: dict[str, Any]) -> None:
    make_server(ctx, hostname="cn2")
    db = create(ctx, alias="db1", tags={"role": "database"})
    near = create(ctx, alias="app1", affinity=["role==database"])
    assert near["server_uuid"] == db["server_uuid"]


def test_bad_affinity_is_invalid_argument_naming_affinity(ctx: Any,
                                                          fleet: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as err:
        create(ctx, affinity=["instance=web1"])
    assert err.value.field == "affinity" and "no operator" in err.value.message
    assert written(ctx) == (0, 0, 0)


# -- dry run ----------------------------------------------------------------------------------


def test_dry_run_explains_without_writing(ctx: Any, fleet: dict[str, Any]) -> None:
    make_server(ctx, hostname="new", setup=False)
    make_server(ctx, hostname="tiny", ram_mb=1024)
    before = table_contents(ctx)
    answer = placement.dry_run(ctx, {"package": "small", "image": "base-64", "owner": "alice"})
    assert answer["server_uuid"] == fleet["server"].uuid and answer["dry_run"]
    removed = {st["name"]: st["removed"] for st in answer["steps"]}
    assert removed["setup"] == 1 and removed["min-ram"] == 1
    assert answer["considered"] == 3 and answer["reasons"] == {"are not set up": 1,
                                                               "lack RAM": 1}
    make_package(ctx, name="huge", memory=64 * 1024, disk=10240)
    refused = placement.dry_run(ctx, {"package": "huge", "image": "base-64"})
    assert refused["server_uuid"] is None
    assert refused["message"] == ("no server can fit 64 GiB of RAM and 10 GiB of disk: "
                                  "2 lack RAM, 1 are not set up")
    after = table_contents(ctx)
    after["packages"] = before["packages"] = []  # the one package this test added
    assert after == before


# -- the capacity report ----------------------------------------------------------------------


def test_report_per_server_and_fleet(ctx: Any, fleet: dict[str, Any]) -> None:
    make_server(ctx, hostname="cn2", ram_mb=10000, disk_mb=100_000, cpus=2)
    make_server(ctx, hostname="off", setup=False)
    machine = create(ctx)  # held on one of the two set-up servers
    answer = planning.report(ctx)
    by_name = {s["hostname"]: s for s in answer["servers"]}
    holder = next(s for s in answer["servers"] if s["uuid"] == machine["server_uuid"])
    assert holder["ram_mb"]["reserved"] == 1024 and holder["ram_mb"]["provisioned"] == 0
    assert holder["machines"] == 1
    assert by_name["cn2"]["cpu"]["total"] == 800
    assert by_name["off"]["placeable"] is False
    fleet_ram = answer["fleet"]["ram_mb"]
    assert fleet_ram["total"] == 65536 + 10000 + 65536
    assert fleet_ram["reserved"] == 1024
    placeable_free = sum(s["ram_mb"]["free"] for s in answer["servers"] if s["placeable"])
    assert fleet_ram["free"] == placeable_free
    assert answer["fleet"]["placeable_servers"] == 2


def test_package_fits_is_a_packing_count(ctx: Any, fleet: dict[str, Any]) -> None:
    # Two servers with 8500 MiB usable RAM each: a 3000 MiB package fits twice on each (4),
    # where the fleet's total free RAM (17000) divided by 3000 would say 5.
    with ctx.transaction() as session:
        session.execute(text("DELETE FROM servers"))
    for name in ("a", "b"):
        make_server(ctx, hostname=name, ram_mb=10000, disk_mb=1_000_000)
    make_package(ctx, name="three-g", memory=3000, disk=1024, cpu_cap=100)
    answer = planning.report(ctx)
    fits = {p["name"]: p["fits"] for p in answer["packages"]}
    assert fits["three-g"] == 4
    assert answer["fleet"]["ram_mb"]["free"] // 3000 == 5
    placed = 0
    while True:
        try:
            create(ctx, package="three-g")
        except InsufficientCapacity:
            break
        placed += 1
    assert placed == 4
    assert {p["name"]: p["fits"] for p in planning.report(ctx)["packages"]}["three-g"] == 0


# -- what if ----------------------------------------------------------------------------------


def test_simulate_adds_removes_and_places(ctx: Any, fleet: dict[str, Any]) -> None:
    make_package(ctx, name="big", memory=16384, disk=10240, cpu_cap=100)
    # cn1 (55705 MiB usable) takes 3 of 16 GiB; two added 32 GiB servers (27852) take 1 each
    answer = planning.simulate(ctx, {
        "add_servers": [{"ram_mb": 32768, "cpus": 8, "disk_mb": 500_000, "count": 2}],
        "place": [{"package": "big", "count": 6}],
    })
    [placed] = answer["placements"]
    assert (placed["requested"], placed["placed"], placed["refused"]) == (6, 5, 1)
    assert placed["servers"] == {"cn1": 3, "new-1-1": 1, "new-1-2": 1}
    assert "lack RAM" in placed["refusal"]
    assert sum(s["added"] for s in answer["servers"]) == 2
    assert {p["name"]: p["fits"] for p in answer["packages"]}["big"] == 0

    without = planning.simulate(ctx, {"remove_servers": [fleet["server"].uuid],
                                      "place": [{"package": "small", "count": 1}]})
    assert without["placements"][0]["placed"] == 0
    assert "there are no servers" in without["placements"][0]["refusal"]


def test_simulate_affinity_spreads_named_machines(ctx: Any, fleet: dict[str, Any]) -> None:
    answer = planning.simulate(ctx, {
        "add_servers": [{"ram_mb": 65536, "cpus": 16, "disk_mb": 1_000_000, "count": 2}],
        "place": [{"package": "small", "count": 4, "alias": "web",
                   "affinity": ["instance!=web*"]}],
    })
    [placed] = answer["placements"]
    assert placed["placed"] == 3 and set(placed["servers"].values()) == {1}
    assert "break an affinity rule" in placed["refusal"]


def test_simulate_refuses_bad_input_naming_the_field(ctx: Any, fleet: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument) as err:
        planning.simulate(ctx, {"place": [{"package": "nope", "count": 1}]})
    assert err.value.field == "place.0.package"
    with pytest.raises(InvalidArgument) as err:
        planning.simulate(ctx, {"remove_servers": ["2f1f0c0e-0000-4000-8000-000000000000"],
                                "place": [{"package": "small", "count": 1}]})
    assert err.value.field == "remove_servers"
    with pytest.raises(InvalidArgument) as err:
        planning.simulate(ctx, {"place": [{"package": "small", "count": 1,
                                           "affinity": ["instance"]}]})
    assert err.value.field == "place.0.affinity"


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(add=st.lists(st.tuples(st.integers(1024, 262_144), st.integers(1, 64),
                              st.integers(10_000, 4_000_000), st.integers(1, 5)), max_size=3),
       remove=st.booleans(),
       place=st.lists(st.tuples(st.sampled_from(["small", "big"]), st.integers(1, 40),
                                st.sampled_from([[], ["instance!=w*"], ["instance==~w1"]])),
                      min_size=1, max_size=3))
def test_simulate_never_changes_real_state(ctx: Any, sim_fleet: dict[str, Any],
                                           add: list[tuple[int, int, int, int]], remove: bool,
                                           place: list[tuple[str, int, list[str]]]) -> None:
    before = table_contents(ctx)
    body: dict[str, Any] = {
        "owner": "alice",
        "add_servers": [{"ram_mb": r, "cpus": c, "disk_mb": d, "count": n}
                        for r, c, d, n in add],
        "remove_servers": [sim_fleet["server"].uuid] if remove else [],
        "place": [{"package": p, "count": n, "affinity": a, "alias": "w"}
                  for p, n, a in place],
    }
    answer = planning.simulate(ctx, body)
    assert len(answer["placements"]) == len(place)
    assert table_contents(ctx) == before


@pytest.fixture
def sim_fleet(ctx: Any, fleet: dict[str, Any]) -> dict[str, Any]:
    make_package(ctx, name="big", memory=16384, disk=10240, cpu_cap=100)
    make_server(ctx, hostname="cn2", ram_mb=32768)
    create(ctx, alias="w1")
    return fleet


# -- history ----------------------------------------------------------------------------------


def test_history_snapshots_and_retention(ctx: Any, fleet: dict[str, Any]) -> None:
    create(ctx)
    old = add(ctx, CapacitySnapshot(
        taken_at=utcnow() - timedelta(days=40), servers=1, placeable_servers=1, machines=0,
        **{f"{r}_{p}{u}": 0 for r, u in (("ram", "_mb"), ("cpu", ""), ("disk", "_mb"))
           for p in ("total", "provisioned", "reserved", "free")}))
    point = planning.record_history(ctx)
    assert point["machines"] == 1 and point["ram_mb"]["reserved"] == 1024
    assert point["ram_mb"]["total"] == 65536 and point["servers"] == 1
    points = planning.history(ctx)
    assert len(points) == 1 and points[0]["taken_at"] > old.taken_at  # the old one is gone
    assert planning.history(ctx, since=utcnow() + timedelta(minutes=1)) == []
    assert len(planning.history(ctx, since=utcnow() - timedelta(minutes=1))) == 1


def snapshots_every_hour(ctx: Any, count: int) -> list[Any]:
    start = utcnow() - timedelta(hours=count)
    return [add(ctx, CapacitySnapshot(
        taken_at=start + timedelta(hours=k), servers=1, placeable_servers=1, machines=k,
        **{f"{r}_{p}{u}": 0 for r, u in (("ram", "_mb"), ("cpu", ""), ("disk", "_mb"))
           for p in ("total", "provisioned", "reserved", "free")})) for k in range(count)]


@pytest.mark.parametrize(("count", "most", "expected"), [
    (0, 3, []), (3, 3, [0, 1, 2]), (4, 3, [0, 2, 3]), (5, 3, [0, 2, 4]), (10, 2, [0, 9]),
    (10, 4, [0, 3, 6, 9])])
def test_a_history_thinned_in_the_database_keeps_first_last_and_even_spread(
        ctx: Any, count: int, most: int, expected: list[int]) -> None:
    snapshots_every_hour(ctx, count)
    points = planning.history(ctx, most=most)
    assert [p["machines"] for p in points] == expected
    assert planning.history_count(ctx) == count
    since = utcnow() - timedelta(hours=count - 1, minutes=30)  # all but the first
    assert [p["machines"] for p in planning.history(ctx, since=since, most=2)] == (
        [1, count - 1] if count > 3 else list(range(1, count)))
    assert planning.history_count(ctx, since) == max(0, count - 1)


def test_reserved_server_is_not_placeable(ctx: Any, fleet: dict[str, Any]) -> None:
    make_server(ctx, hostname="kept", reserved=True)
    make_account(ctx, login="bob", email="bob@example.com")
    answer = planning.report(ctx)
    kept = next(s for s in answer["servers"] if s["hostname"] == "kept")
    assert kept["placeable"] is False
    assert answer["fleet"]["ram_mb"]["free"] == next(
        s for s in answer["servers"] if s["hostname"] == "cn1")["ram_mb"]["free"]


# -- aggregates stay true ---------------------------------------------------------------------

PACKAGES = {"p-small": (1024, 10240, 100), "p-big": (12000, 200_000, 400),
            "p-uncapped": (2048, 20480, 0)}


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(sorted(PACKAGES) + ["release", "commit"]),
                              st.integers(0, 1000)), min_size=1, max_size=40))
def test_no_sequence_of_allocations_overcommits(ctx: Any, agg_fleet: list[Any],
                                                ops: list[tuple[str, int]]) -> None:
    """Creates, commits and releases in any order: every server's sums equal its live
    reservations', and stay within what the policy lets it hold."""
    held: list[str] = []
    for op, pick in ops:
        if op in PACKAGES:
            with contextlib.suppress(InsufficientCapacity):
                held.append(create(ctx, package=op)["uuid"])
        elif held:
            machine = held[pick % len(held)]
            with ctx.transaction() as session:
                if op == "commit":
                    capacity.commit(session, machine)
                else:
                    capacity.release(session, machine)
                    held.remove(machine)
    policy = svc.policy_for(ctx)
    with ctx.read() as session:
        for srv in session.scalars(select(Server)):
            live = session.scalars(select(Reservation).where(
                Reservation.server_uuid == srv.uuid,
                Reservation.state.in_(("held", "committed")))).all()
            assert srv.ram_inflight_mb + srv.ram_committed_mb == sum(r.ram_mb for r in live)
            assert srv.cpu_inflight + srv.cpu_committed == sum(r.cpu for r in live)
            assert srv.machine_count == len(live)
            assert srv.capped_count == sum(1 for r in live if r.cpu > 0)
            assert srv.uncapped_count == sum(1 for r in live if r.cpu <= 0)
            assert not (srv.capped_count and srv.uncapped_count)
            state = fleet.state_of(srv)
            assert unreserved_ram(state, policy) >= 0 and unreserved_disk(state, policy) >= 0
            assert srv.capped_count == 0 or unreserved_cpu(state, policy) >= 0
    with ctx.transaction() as session:  # hypothesis reuses the fixture: start clean
        for machine in held:
            capacity.release(session, machine)
        session.execute(text("DELETE FROM jobs"))
        session.execute(text("DELETE FROM reservations"))
        session.execute(text("DELETE FROM machines"))
        session.execute(text("DELETE FROM server_images"))
        session.execute(text("UPDATE servers SET images_mb = 0"))


@pytest.fixture
def agg_fleet(ctx: Any, fleet: dict[str, Any]) -> list[Any]:
    for name, (memory, disk, cpu_cap) in PACKAGES.items():
        make_package(ctx, name=name, memory=memory, disk=disk, cpu_cap=cpu_cap)
    return [fleet["server"], make_server(ctx, hostname="cn2", ram_mb=16384, cpus=2,
                                         disk_mb=400_000)]
