"""Server liveness from heartbeats (workflows/liveness.py) on the real PostgreSQL, and once on
SQLite (``sdc up``): the edges of staleness, a young heartbeat table, rows another transaction
holds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import update

from headnode.config import get_settings
from headnode.services.context import ServiceContext
from headnode.store.migrate import upgrade
from headnode.store.models import Account, Image, Machine, Package, Server
from tests.unit.headnode.services.conftest import make_machine, make_server, server_row
from tests.unit.workflows.conftest import get_machine
from tests.unit.workflows.test_lock_order import Beside
from workflows import liveness

LIFETIME = 11.0


def reconcile(ctx: Any, beats: dict[str, float], now: float,
              table_since: float | None = None) -> tuple[list[str], list[str]]:
    with ctx.transaction() as session:
        done = liveness.reconcile(session, beats, LIFETIME, now=now, table_since=table_since)
    return done.unknown, done.running


def test_stale_heartbeat_then_fresh_again(ctx: Any, fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    running = make_machine(ctx, fleet, alias="r", state="running")
    stopped = make_machine(ctx, fleet, alias="s", state="stopped")
    now = 1_800_000_000.0

    assert reconcile(ctx, {server_uuid: now - 5}, now) == ([], [])
    assert server_row(ctx, server_uuid).status == "running"

    assert reconcile(ctx, {server_uuid: now - 12}, now) == ([server_uuid], [])
    server = server_row(ctx, server_uuid)
    assert server.status == "unknown" and server.last_heartbeat == now - 12
    machine = get_machine(ctx, running.uuid)
    assert (machine.state, machine.last_known_state) == ("unknown", "running")
    assert get_machine(ctx, stopped.uuid).state == "stopped"
    # still stale: reported once only
    assert reconcile(ctx, {server_uuid: now - 12}, now + 1) == ([], [])

    assert reconcile(ctx, {server_uuid: now + 10}, now + 10) == ([], [server_uuid])
    server = server_row(ctx, server_uuid)
    assert server.status == "running" and server.last_heartbeat == now + 10
    machine = get_machine(ctx, running.uuid)
    assert (machine.state, machine.last_known_state) == ("running", None)
    assert get_machine(ctx, stopped.uuid).state == "stopped"


def test_a_beat_exactly_one_lifetime_old_is_still_fresh(ctx: Any) -> None:
    now = 1_800_000_000.0
    edge = make_server(ctx, hostname="edge")
    past = make_server(ctx, hostname="past")
    back = make_server(ctx, hostname="back", status="unknown")
    beats = {edge.uuid: now - LIFETIME, past.uuid: now - LIFETIME - 0.001,
             back.uuid: now - LIFETIME}
    assert reconcile(ctx, beats, now) == ([past.uuid], [back.uuid])


def test_server_without_any_heartbeat_becomes_unknown(ctx: Any, fleet: dict[str, Any]) -> None:
    machine = make_machine(ctx, fleet, state="running")
    before = server_row(ctx, fleet["server"].uuid).last_heartbeat
    assert reconcile(ctx, {}, time.time()) == ([fleet["server"].uuid], [])
    server = server_row(ctx, fleet["server"].uuid)
    assert (server.status, server.last_heartbeat) == ("unknown", before)  # nothing to show
    assert get_machine(ctx, machine.uuid).state == "unknown"


def test_a_new_heartbeat_table_gives_servers_time_to_beat_again(ctx: Any,
                                                                 fleet: dict[str, Any]) -> None:
    # After a Redis restart the table is empty: nobody is unknown until a lifetime has passed,
    # but a beat that is in the table and stale still counts.
    machine = make_machine(ctx, fleet, state="running")
    stale = make_server(ctx, hostname="stale")
    now = time.time()
    assert reconcile(ctx, {stale.uuid: now - 12}, now, table_since=now - 5) == ([stale.uuid],
                                                                              [])
    assert reconcile(ctx, {}, now, table_since=now - LIFETIME) == ([], [])  # the edge: young
    assert server_row(ctx, fleet["server"].uuid).status == "running"
    assert get_machine(ctx, machine.uuid).state == "running"
    assert reconcile(ctx, {}, now, table_since=now - 12) == ([fleet["server"].uuid], [])


def test_heartbeat_written_to_the_database_at_most_every_30_s(ctx: Any,
                                                              fleet: dict[str, Any]) -> None:
    server_uuid = fleet["server"].uuid
    start = 1_800_000_000.0
    reconcile(ctx, {server_uuid: start}, start)
    assert server_row(ctx, server_uuid).last_heartbeat == start
    reconcile(ctx, {server_uuid: start + 10}, start + 10)
    assert server_row(ctx, server_uuid).last_heartbeat == start
    reconcile(ctx, {server_uuid: start + 30}, start + 30)
    assert server_row(ctx, server_uuid).last_heartbeat == start + 30


def test_a_server_without_a_displayed_heartbeat_gets_one(ctx: Any) -> None:
    server = make_server(ctx, last_heartbeat=None)
    now = time.time()
    assert reconcile(ctx, {server.uuid: now - 1}, now) == ([], [])
    assert server_row(ctx, server.uuid).last_heartbeat == now - 1


def test_rows_another_transaction_holds_are_left_for_a_later_pass(ctx: Any) -> None:
    # A provision (or a registration) holds its servers' rows until it commits: the pass
    # neither waits for them nor changes them, and takes them up once they are free.
    now = 1_800_000_000.0
    stale = make_server(ctx, hostname="stale")
    shown = make_server(ctx, hostname="shown", last_heartbeat=now - 100)
    free = make_server(ctx, hostname="free")
    beats = {shown.uuid: now, free.uuid: now - 12}
    with ctx.sessions() as other, other.begin():
        other.execute(update(Server).where(Server.uuid.in_([stale.uuid, shown.uuid]))
                      .values(ram_inflight_mb=Server.ram_inflight_mb + 1024))
        beside = Beside(ctx, lambda session: liveness.reconcile(session, beats, LIFETIME,
                                                                now=now))
        beside.start()
        done = beside.finish()
        assert (done.unknown, done.running) == ([free.uuid], [])
        assert server_row(ctx, stale.uuid).status == "running"
        assert server_row(ctx, shown.uuid).last_heartbeat == now - 100
    assert reconcile(ctx, beats, now) == ([stale.uuid], [])
    assert server_row(ctx, shown.uuid).last_heartbeat == now


def test_a_server_another_pass_is_changing_is_reported_once(ctx: Any,
                                                            fleet: dict[str, Any]) -> None:
    # Two workers may run the reconciler at once: the second skips the row the first holds,
    # and once the first has committed finds nothing left to change; the machines keep the
    # state they had before the server went unknown.
    machine = make_machine(ctx, fleet, state="running")
    server_uuid = fleet["server"].uuid
    now = 1_800_000_000.0
    beats = {server_uuid: now - 12}
    with ctx.sessions() as first, first.begin():
        assert liveness.reconcile(first, beats, LIFETIME, now=now).unknown == [server_uuid]
        second = Beside(ctx, lambda session: liveness.reconcile(session, beats, LIFETIME,
                                                                now=now))
        second.start()
        assert second.finish() == liveness.Pass([], [])
    assert reconcile(ctx, beats, now) == ([], [])
    machine = get_machine(ctx, machine.uuid)
    assert (machine.state, machine.last_known_state) == ("unknown", "running")


def test_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sdc.db"
    upgrade(url)
    lite = ServiceContext(get_settings(database_url=url, data_dir=tmp_path))
    now = 1_800_000_000.0
    with lite.transaction() as session:
        owner, package, image = (Account(login="alice", email="alice@example.com"),
                                 Package(name="small", memory=1024, disk=10240),
                                 Image(name="base-64", size_mb=300))
        session.add_all([owner, package, image])
        session.flush()
    fleet = {"server": make_server(lite, hostname="cn1", last_heartbeat=now - 100),
             "owner": owner, "package": package, "image": image}
    young = make_server(lite, hostname="young", last_heartbeat=None)
    machine = make_machine(lite, fleet, state="running")
    server_uuid = fleet["server"].uuid

    assert reconcile(lite, {young.uuid: now}, now, table_since=now - 5) == ([], [])
    assert server_row(lite, young.uuid).last_heartbeat == now
    assert reconcile(lite, {server_uuid: now - 12}, now) == (sorted([server_uuid, young.uuid]),
                                                             [])
    assert get_machine(lite, machine.uuid).state == "unknown"
    assert reconcile(lite, {server_uuid: now - LIFETIME}, now) == ([], [server_uuid])
    with lite.read() as session:
        restored = session.get(Machine, machine.uuid)
        assert restored is not None and restored.state == "running"
    assert server_row(lite, server_uuid).last_heartbeat == now - LIFETIME


# -- since when the heartbeat table is whole (real Redis) --------------------------------------


def test_the_table_is_new_after_redis_came_back_empty(clean_redis: str) -> None:
    client = redis.Redis.from_url(clean_redis)
    now = 1_800_000_000.0
    assert liveness.table_since(client, LIFETIME, 5.0, now) == now
    assert liveness.table_since(client, LIFETIME, 5.0, now + 5) == now  # passes go on
    client.flushall()  # a restart without persistence
    assert liveness.table_since(client, LIFETIME, 5.0, now + 10) == now + 10


def test_the_table_starts_over_after_passes_could_not_read_it_for_a_lifetime(
        clean_redis: str) -> None:
    # Redis kept its data (persistence) but was away: every beat in it is stale, and nobody
    # could have beaten. Passes read it again: the table counts as new, for a lifetime.
    client = redis.Redis.from_url(clean_redis)
    now = 1_800_000_000.0
    assert liveness.table_since(client, LIFETIME, 5.0, now) == now
    assert liveness.table_since(client, LIFETIME, 5.0, now + 16) == now  # a late pass only
    back = now + 16 + LIFETIME + 5.0 + 0.1
    assert liveness.table_since(client, LIFETIME, 5.0, back) == back
