"""Capacity reservations on the real PostgreSQL: reserve, commit, release, orphans, races."""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import select

from headnode.placement.state import Policy
from headnode.services import capacity
from headnode.store.models import Job, Reservation, ServerImage, new_uuid
from tests.unit.headnode.services.conftest import (
    add,
    count,
    make_server,
    reservation_states,
    server_row,
)

POLICY = Policy()


def reserve(ctx: Any, server_uuid: str, ram: int = 2000, disk: int = 1000, cpu: int = 100,
            machine_uuid: str | None = None, job_uuid: str | None = None,
            policy: Policy = POLICY) -> tuple[bool, str]:
    machine_uuid = machine_uuid or new_uuid()
    with ctx.transaction() as session:
        ok = capacity.reserve(session, server_uuid, machine_uuid, job_uuid or new_uuid(),
                              ram, disk, cpu, policy)
    return ok, machine_uuid


def reservation(ctx: Any, machine_uuid: str) -> Reservation | None:
    with ctx.read() as session:
        return session.get(Reservation, machine_uuid)


def test_reserve_until_full(ctx: Any) -> None:
    # 10000 MiB of RAM keeps 15 % back: 8500 usable, room for four machines of 2000
    server = make_server(ctx, ram_mb=10000, disk_mb=1_000_000)
    results = [reserve(ctx, server.uuid) for _ in range(5)]
    assert [ok for ok, _ in results] == [True, True, True, True, False]
    row = server_row(ctx, server.uuid)
    assert (row.ram_inflight_mb, row.disk_inflight_mb, row.cpu_inflight) == (8000, 4000, 400)
    assert row.machine_count == 4
    assert (row.ram_committed_mb, row.disk_committed_mb) == (0, 0)
    assert reservation_states(ctx) == {"held": 4}
    assert reservation(ctx, results[-1][1]) is None  # the refused one wrote nothing
    # what is left (500 MiB) still fits a small one
    assert reserve(ctx, server.uuid, ram=500)[0]


def test_reserve_checks_disk_and_machine_count(ctx: Any) -> None:
    server = make_server(ctx, ram_mb=1_000_000, disk_mb=10000)  # 9400 usable
    assert reserve(ctx, server.uuid, disk=9400)[0]
    assert not reserve(ctx, server.uuid, disk=1)[0]
    other = make_server(ctx, ram_mb=1_000_000, disk_mb=1_000_000)
    two = Policy(max_machines=2)
    assert [reserve(ctx, other.uuid, policy=two)[0] for _ in range(3)] == [True, True, False]


def test_reserve_refuses_servers_that_cannot_take_machines(ctx: Any) -> None:
    for attrs in ({"setup": False}, {"reserved": True}, {"status": "unknown"}):
        server = make_server(ctx, **attrs)
        assert not reserve(ctx, server.uuid)[0], attrs
        assert server_row(ctx, server.uuid).machine_count == 0
    assert not reserve(ctx, new_uuid())[0]  # no such server
    assert reservation_states(ctx) == {}


def test_a_server_forgotten_since_placement_is_a_refusal_not_an_error(ctx: Any) -> None:
    """The first machine of an image on a server claims the image there: on a server deleted
    since placement chose it, that claim was a foreign-key error (a 500 for the create)."""
    gone = new_uuid()
    with ctx.transaction() as session:
        assert not capacity.reserve(session, gone, new_uuid(), new_uuid(), 100, 100, 0,
                                    POLICY, image_uuid=new_uuid(), image_mb=10)
    assert reservation_states(ctx) == {} and count(ctx, ServerImage) == 0


def test_commit_moves_inflight_to_committed_once(ctx: Any) -> None:
    server = make_server(ctx)
    ok, machine = reserve(ctx, server.uuid, ram=2000, disk=1000, cpu=50)
    assert ok
    for expected in (True, False, False):
        with ctx.transaction() as session:
            assert capacity.commit(session, machine) is expected
        row = server_row(ctx, server.uuid)
        assert (row.ram_inflight_mb, row.disk_inflight_mb, row.cpu_inflight) == (0, 0, 0)
        assert (row.ram_committed_mb, row.disk_committed_mb, row.cpu_committed) == (2000, 1000, 50)
        assert row.machine_count == 1
    res = reservation(ctx, machine)
    assert res is not None and res.state == "committed" and res.ended_at is None


def test_commit_of_unknown_machine_is_false(ctx: Any) -> None:
    with ctx.transaction() as session:
        assert capacity.commit(session, new_uuid()) is False


def test_release_held_is_idempotent(ctx: Any) -> None:
    server = make_server(ctx)
    _, keep = reserve(ctx, server.uuid, ram=1000, disk=500, cpu=10)
    _, machine = reserve(ctx, server.uuid, ram=2000, disk=1000, cpu=50)
    for expected in (True, False):
        with ctx.transaction() as session:
            assert capacity.release(session, machine) is expected
        row = server_row(ctx, server.uuid)
        assert (row.ram_inflight_mb, row.disk_inflight_mb, row.cpu_inflight) == (1000, 500, 10)
        assert row.machine_count == 1
    res = reservation(ctx, machine)
    assert res is not None and res.state == "released" and res.ended_at is not None
    kept = reservation(ctx, keep)
    assert kept is not None and kept.state == "held"


def test_release_committed_is_idempotent(ctx: Any) -> None:
    server = make_server(ctx)
    _, machine = reserve(ctx, server.uuid, ram=2000, disk=1000, cpu=50)
    with ctx.transaction() as session:
        capacity.commit(session, machine)
    for expected in (True, False):
        with ctx.transaction() as session:
            assert capacity.release(session, machine) is expected
        row = server_row(ctx, server.uuid)
        assert (row.ram_committed_mb, row.disk_committed_mb, row.cpu_committed) == (0, 0, 0)
        assert (row.ram_inflight_mb, row.disk_inflight_mb) == (0, 0)
        assert row.machine_count == 0
    # a released reservation cannot be committed any more
    with ctx.transaction() as session:
        assert capacity.commit(session, machine) is False
    assert server_row(ctx, server.uuid).ram_committed_mb == 0


def test_release_orphans(ctx: Any) -> None:
    server = make_server(ctx)
    jobs = {}
    for execution in ("queued", "running", "succeeded", "failed"):
        job = add(ctx, Job(name="provision", execution=execution))
        jobs[execution] = job.uuid
    machines = {execution: reserve(ctx, server.uuid, ram=100, job_uuid=job_uuid)[1]
                for execution, job_uuid in jobs.items()}
    machines["missing"] = reserve(ctx, server.uuid, ram=100, job_uuid=new_uuid())[1]
    # a committed reservation of a finished job is usage, not an orphan
    committed = reserve(ctx, server.uuid, ram=100, job_uuid=jobs["succeeded"])[1]
    with ctx.transaction() as session:
        capacity.commit(session, committed)

    with ctx.transaction() as session:
        assert capacity.release_orphans(session) == 3
    with ctx.read() as session:
        states = {m: s for m, s in session.execute(
            select(Reservation.machine_uuid, Reservation.state)).all()}
    assert states[machines["queued"]] == "held"
    assert states[machines["running"]] == "held"
    assert states[machines["succeeded"]] == "released"
    assert states[machines["failed"]] == "released"
    assert states[machines["missing"]] == "released"
    assert states[committed] == "committed"
    row = server_row(ctx, server.uuid)
    assert row.ram_inflight_mb == 200 and row.ram_committed_mb == 100
    assert row.machine_count == 3
    with ctx.transaction() as session:
        assert capacity.release_orphans(session) == 0


def test_concurrent_reserve_never_overcommits(ctx: Any) -> None:
    # 10000 * 0.85 = 8500 MiB usable: exactly five machines of 1700 MiB
    server = make_server(ctx, ram_mb=10000)
    threads = 8
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            with ctx.transaction() as session:
                session.connection()  # open the transaction before everyone races
                barrier.wait(timeout=30)
                ok = capacity.reserve(session, server.uuid, new_uuid(), new_uuid(),
                                      1700, 100, 0, POLICY)
            with lock:
                results.append(ok)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(results) == [False] * 3 + [True] * 5
    row = server_row(ctx, server.uuid)
    assert row.ram_inflight_mb == 5 * 1700 and row.machine_count == 5
    assert reservation_states(ctx) == {"held": 5}


def test_reserve_guards_capness_and_cpu_shares(ctx: Any) -> None:
    server = make_server(ctx, cpus=2)  # 2 * 100 % * 4.0 = 800 shares
    ok, capped = reserve(ctx, server.uuid, ram=100, disk=100, cpu=500)
    assert ok
    assert not reserve(ctx, server.uuid, ram=100, disk=100, cpu=0)[0]  # uncapped: capness
    assert not reserve(ctx, server.uuid, ram=100, disk=100, cpu=301)[0]  # 800 - 500 < 301
    assert reserve(ctx, server.uuid, ram=100, disk=100, cpu=300)[0]
    row = server_row(ctx, server.uuid)
    assert (row.capped_count, row.uncapped_count, row.cpu_inflight) == (2, 0, 800)
    with ctx.transaction() as session:
        capacity.commit(session, capped)
        capacity.release(session, capped)
    row = server_row(ctx, server.uuid)
    assert (row.capped_count, row.uncapped_count, row.machine_count) == (1, 0, 1)


def test_release_frees_an_uncapped_servers_capness(ctx: Any) -> None:
    server = make_server(ctx)
    _, machine = reserve(ctx, server.uuid, cpu=0)
    assert not reserve(ctx, server.uuid, cpu=100)[0]
    with ctx.transaction() as session:
        assert capacity.release(session, machine)
    assert server_row(ctx, server.uuid).uncapped_count == 0
    assert reserve(ctx, server.uuid, cpu=100)[0]


def test_image_room_is_claimed_once_and_given_back_on_refusal(ctx: Any) -> None:
    server = make_server(ctx, disk_mb=10000)  # 9400 usable
    image = new_uuid()
    assert not reserve_image(ctx, server.uuid, image, disk=9000, image_mb=500)
    assert server_row(ctx, server.uuid).images_mb == 0  # the refusal took its claim back
    assert reserve_image(ctx, server.uuid, image, disk=8000, image_mb=500)
    assert reserve_image(ctx, server.uuid, image, disk=900, image_mb=500)  # image is there
    row = server_row(ctx, server.uuid)
    assert (row.images_mb, row.disk_inflight_mb) == (500, 8900)
    # a refusal leaves a claim an earlier provision made alone
    assert not reserve_image(ctx, server.uuid, image, disk=9000, image_mb=500)
    assert count(ctx, ServerImage) == 1
    assert server_row(ctx, server.uuid).images_mb == 500


def test_a_refused_first_claim_is_free_for_the_next_provision(ctx: Any) -> None:
    small, roomy = make_server(ctx, disk_mb=1000), make_server(ctx, hostname="cn2")
    image = new_uuid()
    with ctx.transaction() as session:
        # one transaction, as a create that lost one server and placed on another
        assert not capacity.reserve(session, small.uuid, new_uuid(), new_uuid(), 100, 100, 100,
                                    POLICY, image, 5000)
        assert capacity.reserve(session, roomy.uuid, new_uuid(), new_uuid(), 100, 100, 100,
                                POLICY, image, 5000)
    with ctx.read() as session:
        claims = session.scalars(select(ServerImage.server_uuid)).all()
    assert claims == [roomy.uuid]
    assert reserve_image(ctx, small.uuid, image, disk=100, image_mb=400)
    assert server_row(ctx, small.uuid).images_mb == 400


def reserve_image(ctx: Any, server_uuid: str, image_uuid: str, disk: int,
                  image_mb: int) -> bool:
    with ctx.transaction() as session:
        return capacity.reserve(session, server_uuid, new_uuid(), new_uuid(), 100, disk, 100,
                                POLICY, image_uuid, image_mb)


def test_growth_fits_by_the_same_rule_as_a_new_machine(ctx: Any) -> None:
    # 10000 MiB pool * 0.94 = 9400, 500 of them images: growing by 9000 no longer fits
    server = make_server(ctx, ram_mb=10000, disk_mb=10000, images_mb=500)
    with ctx.transaction() as session:
        assert not capacity.reserve_growth(session, server.uuid, 0, 9000, 0, POLICY)
        assert capacity.reserve_growth(session, server.uuid, 0, 8900, 0, POLICY)
        # RAM: 10000 * 0.85 = 8500
        assert not capacity.reserve_growth(session, server.uuid, 8501, 0, 0, POLICY)
        assert capacity.reserve_growth(session, server.uuid, 8500, 0, 0, POLICY)
    row = server_row(ctx, server.uuid)
    assert (row.ram_inflight_mb, row.disk_inflight_mb) == (8500, 8900)
