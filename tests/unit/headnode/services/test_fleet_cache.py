"""The API process's fleet snapshot (services/fleet_cache.py) on the real PostgreSQL: it
agrees with a direct read of the fleet after every kind of change, reads only what changed,
never misses a slow transaction's change nor takes an uncommitted one; and a create that
decides on a stale snapshot is put right by the reservation's guard."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, event, update

from headnode.placement.state import Policy, ServerState
from headnode.services import capacity, fleet, fleet_cache, servers
from headnode.services import machines as svc
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


FleetCacheType = fleet_cache.FleetCache


@pytest.fixture
def cache() -> FleetCacheType:
    return fleet_cache.FleetCache()


def direct(ctx: Any) -> dict[str, ServerState]:
    with ctx.read() as session:
        return {s.uuid: s for s in fleet.load_servers(session)}


def cached(ctx: Any, cache: FleetCacheType) -> dict[str, ServerState]:
    with ctx.read() as session:
        return {s.uuid: s for s in cache.current(session, fresh=True)}


def change(ctx: Any, uuid: str, **values: Any) -> None:
    with ctx.transaction() as session:
        session.execute(update(Server).where(Server.uuid == uuid).values(**values))


def test_the_snapshot_follows_every_change_a_direct_read_sees(
        ctx: Any, cache: FleetCacheType) -> None:
    assert cached(ctx, cache) == {}  # no servers at all
    cn1 = make_server(ctx, hostname="cn1").uuid
    assert cached(ctx, cache) == direct(ctx)  # a new server
    cn2 = make_server(ctx, hostname="cn2", traits={"ssd": True},
                      sysinfo={"NIC Names": ["admin", "external"]}).uuid
    assert cached(ctx, cache) == direct(ctx)
    assert cached(ctx, cache)[cn2].nic_tags == frozenset({"admin", "external"})

    change(ctx, cn1, status="unknown")  # what the reconciler does
    assert cached(ctx, cache)[cn1].status == "unknown"
    change(ctx, cn1, status="running")
    assert cached(ctx, cache)[cn1].status == "running"
    change(ctx, cn2, maintenance=True, traits={"ssd": False})
    assert cached(ctx, cache) == direct(ctx)

    with ctx.transaction() as session:  # a reservation taken ...
        assert capacity.reserve(session, cn1, "m1", "j1", 2048, 10240, 0, Policy())
    assert cached(ctx, cache)[cn1].ram_used_mb == 2048
    assert cached(ctx, cache)[cn1].machine_count == 1
    with ctx.transaction() as session:  # ... and released
        assert capacity.release(session, "m1")
    assert cached(ctx, cache)[cn1].ram_used_mb == 0
    assert cached(ctx, cache) == direct(ctx)

    servers.forget_server(ctx, cn1)  # a server removed
    assert set(cached(ctx, cache)) == {cn2}
    with ctx.transaction() as session:
        session.execute(delete(Server))
    assert cached(ctx, cache) == {}


def test_a_refresh_reads_and_decodes_only_the_servers_that_changed(
        ctx: Any, cache: FleetCacheType) -> None:
    quiet = make_server(ctx, hostname="quiet", sysinfo={"NIC Names": ["admin"]}).uuid
    busy = make_server(ctx, hostname="busy", traits={"ssd": True},
                       sysinfo={"NIC Names": ["admin"]}).uuid
    before = cached(ctx, cache)
    change(ctx, busy, ram_inflight_mb=4096)
    after = cached(ctx, cache)
    assert after[quiet] is before[quiet]  # not read again
    assert after[busy] is not before[busy] and after[busy].ram_used_mb == 4096
    # what it says in text did not change: what was decoded from it is reused
    assert after[busy].traits is before[busy].traits
    assert after[busy].nic_tags is before[busy].nic_tags
    change(ctx, busy, traits={"ssd": False})
    assert cached(ctx, cache)[busy].traits == {"ssd": False}


def test_a_slow_transaction_that_commits_after_a_refresh_is_not_missed(
        ctx: Any, cache: FleetCacheType) -> None:
    slow_server = make_server(ctx, hostname="slow").uuid
    other = make_server(ctx, hostname="other").uuid
    cached(ctx, cache)
    engine = ctx.sessions.kw["bind"]
    with engine.connect() as slow:
        transaction = slow.begin()
        slow.execute(update(Server).where(Server.uuid == slow_server)
                     .values(status="unknown"))
        change(ctx, other, ram_inflight_mb=1024)  # a quick one, committed meanwhile
        seen = cached(ctx, cache)
        assert seen[slow_server].status == "running"  # not committed yet
        assert seen[other].ram_used_mb == 1024
        transaction.commit()
    change(ctx, other, ram_inflight_mb=2048)  # the watermark moves on past the slow one
    assert cached(ctx, cache)[slow_server].status == "unknown"
    assert cached(ctx, cache) == direct(ctx)


def test_the_reading_transactions_own_uncommitted_writes_are_never_cached(
        ctx: Any, cache: FleetCacheType) -> None:
    cn1 = make_server(ctx, hostname="cn1").uuid
    cached(ctx, cache)
    with ctx.sessions() as session:
        session.execute(update(Server).where(Server.uuid == cn1).values(ram_inflight_mb=999))
        mine = {s.uuid: s for s in cache.current(session, fresh=True)}
        assert mine[cn1].ram_used_mb == 0
        session.rollback()
    assert cached(ctx, cache)[cn1].ram_used_mb == 0


def test_a_server_holds_the_images_its_reservations_claimed(
        ctx: Any, cache: FleetCacheType) -> None:
    holder, other = make_server(ctx, hostname="a").uuid, make_server(ctx, hostname="b").uuid
    image = make_image(ctx, name="base-64").uuid
    cached(ctx, cache)
    with ctx.transaction() as session:  # the claim sticks with the guard's UPDATE
        assert capacity.reserve(session, holder, "m1", "j1", 1024, 10240, 0, Policy(),
                                image, 300)
    seen = cached(ctx, cache)
    assert seen[holder].images == frozenset({image})
    assert seen[holder].images_mb == 300
    assert seen[other].images == frozenset()
    # what a direct read for this image says
    with ctx.read() as session:
        want = {s.uuid: s.images for s in fleet.load_servers(session, image_uuid=image)}
    assert want == {uuid: state.images for uuid, state in seen.items()}


# -- creates on a stale snapshot: the guard refuses, the create decides again -------------


@pytest.fixture
def stale(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Creates decide on the snapshot as last read, however old (unless refused)."""
    monkeypatch.setattr(fleet_cache, "MAX_AGE", 3600.0)
    yield


def warm(ctx: Any) -> None:
    with ctx.read() as session:
        found = fleet_cache.cache_for(session)
        assert found is not None
        found.current(session, fresh=True)


def create(ctx: Any, package: str = "small") -> dict[str, Any]:
    return svc.create_machine(ctx, {"owner": "alice", "package": package,
                                    "image": "base-64"}, CALLER)


@pytest.fixture
def catalog(ctx: Any) -> None:
    make_package(ctx, name="small", memory=1024, disk=10240)
    make_image(ctx, name="base-64")
    make_account(ctx, login="alice")


@pytest.fixture
def guards(ctx: Any) -> Iterator[list[str]]:
    """The reservation guard's UPDATEs sent while the test runs."""
    seen: list[str] = []
    engine = ctx.sessions.kw["bind"]

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("UPDATE servers") and "b_image_add" in statement:
            seen.append(statement)

    event.listen(engine, "after_cursor_execute", record)
    yield seen
    event.remove(engine, "after_cursor_execute", record)


def test_a_create_whose_stale_pick_is_full_lands_elsewhere(
        ctx: Any, catalog: None, stale: None, guards: list[str]) -> None:
    spread = ServiceContext(dataclasses.replace(ctx.settings, weight_uniform_random=0.0),
                            jobs=ctx.jobs, _sessions=ctx.sessions)
    empty = make_server(ctx, hostname="empty").uuid
    half = make_server(ctx, hostname="half", ram_inflight_mb=28000).uuid
    warm(ctx)
    change(ctx, empty, ram_inflight_mb=65536)  # filled after the snapshot was read
    assert create(spread)["server_uuid"] == half
    assert len(guards) == 2  # the stale pick refused, then its next best
    assert server_row(ctx, empty).ram_inflight_mb == 65536  # the guard held


def test_a_create_refused_on_a_stale_snapshot_is_refused_for_the_real_reasons(
        ctx: Any, catalog: None, stale: None) -> None:
    ids = [make_server(ctx, hostname=f"cn{i}").uuid for i in range(3)]
    warm(ctx)
    for uuid in ids:
        change(ctx, uuid, ram_inflight_mb=65536)
    with pytest.raises(InsufficientCapacity) as refused:
        create(ctx)
    assert refused.value.reasons == {"lack RAM": 3}


def test_a_server_freed_after_the_snapshot_is_found(
        ctx: Any, catalog: None, stale: None) -> None:
    cn1 = make_server(ctx, hostname="cn1", ram_inflight_mb=65536).uuid
    warm(ctx)  # full, as the cache saw it
    change(ctx, cn1, ram_inflight_mb=0)
    assert create(ctx)["server_uuid"] == cn1
    late = make_server(ctx, hostname="late").uuid  # a server set up since
    change(ctx, cn1, ram_inflight_mb=65536)
    assert create(ctx)["server_uuid"] == late


def test_no_servers_at_all(ctx: Any, catalog: None, stale: None) -> None:
    warm(ctx)
    with pytest.raises(InsufficientCapacity) as refused:
        create(ctx)
    assert "there are no servers" in str(refused.value)


def test_an_exact_fit_takes_one_machine_and_the_stale_second_is_refused(
        ctx: Any, catalog: None, stale: None) -> None:
    # 20480 MiB less the 15 % reservation is 17408: room for exactly one 1024 MiB machine
    cn1 = make_server(ctx, hostname="cn1", ram_mb=20480, ram_inflight_mb=16384).uuid
    warm(ctx)
    assert create(ctx)["server_uuid"] == cn1
    # the snapshot still shows the room; the guard does not, and the fresh read says why
    with pytest.raises(InsufficientCapacity) as refused:
        create(ctx)
    assert refused.value.reasons == {"lack RAM": 1}
    assert server_row(ctx, cn1).ram_inflight_mb == 16384 + 1024


def test_threads_share_one_snapshot_and_it_ends_where_the_database_is(
        ctx: Any, cache: FleetCacheType) -> None:
    ids = [make_server(ctx, hostname=f"cn{i}").uuid for i in range(6)]
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(15):
                assert len(cached(ctx, cache)) == len(ids)
        except BaseException as exc:  # reported below, with the thread's assertion
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    for i, uuid in enumerate(ids * 3):  # changes while they read
        change(ctx, uuid, ram_inflight_mb=1024 * i)
    for thread in threads:
        thread.join()
    assert errors == []
    assert cached(ctx, cache) == direct(ctx)
