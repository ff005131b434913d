"""The reservation ledger at its edges, on the real PostgreSQL: zero, an exact fit and one past
it for each resource alone, a CPU cap of 1, what a reservation row records, an image claim
taken back without touching anyone else's, growth and shrink of a resize to the unit.

Written for mutation testing (bench/mutation.py --target capacity): each test pins a value
or a boundary that the tests of test_capacity.py pass through without looking at.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event, select

from headnode.placement.state import Policy
from headnode.services import capacity
from headnode.store.models import Job, Reservation, ServerImage, new_uuid
from tests.unit.headnode.services.conftest import add, count, make_server, server_row

POLICY = Policy()


def reserve(ctx: Any, server_uuid: str, ram: int = 100, disk: int = 100, cpu: int = 0,
            image_uuid: str | None = None, image_mb: int | None = None,
            policy: Policy = POLICY) -> tuple[bool, str]:
    machine_uuid = new_uuid()
    extra: dict[str, Any] = {} if image_mb is None else {"image_mb": image_mb}
    with ctx.transaction() as session:
        ok = capacity.reserve(session, server_uuid, machine_uuid, new_uuid(), ram, disk, cpu,
                              policy, image_uuid, **extra)
    return ok, machine_uuid


def sums(ctx: Any, server_uuid: str) -> dict[str, int]:
    row = server_row(ctx, server_uuid)
    return {"ram_inflight": row.ram_inflight_mb, "disk_inflight": row.disk_inflight_mb,
            "cpu_inflight": row.cpu_inflight, "ram": row.ram_committed_mb,
            "disk": row.disk_committed_mb, "cpu": row.cpu_committed,
            "count": row.machine_count, "capped": row.capped_count,
            "uncapped": row.uncapped_count, "images": row.images_mb}


def held(ram: int = 0, disk: int = 0, cpu: int = 0, count: int = 0, capped: int = 0,
         uncapped: int = 0, images: int = 0) -> dict[str, int]:
    """sums() of a server holding this in flight (and nothing committed)."""
    return {"ram_inflight": ram, "disk_inflight": disk, "cpu_inflight": cpu, "ram": 0,
            "disk": 0, "cpu": 0, "count": count, "capped": capped, "uncapped": uncapped,
            "images": images}


def reservation(ctx: Any, machine_uuid: str) -> Reservation:
    with ctx.read() as session:
        res = session.get(Reservation, machine_uuid)
        assert res is not None
        return res


def claims(ctx: Any) -> set[tuple[str, str, int]]:
    with ctx.read() as session:
        return {(r.server_uuid, r.image_uuid, r.size_mb)
                for r in session.scalars(select(ServerImage))}


# -- reserve: each resource alone, at its exact fit and one past it -------------------------


def test_each_resource_alone_fits_exactly_and_not_one_more(ctx: Any) -> None:
    # RAM: 10000 * (1 - 0.15) = 8500; disk: 10000 * 0.94 = 9400; CPU: 2 * 100 * 4 = 800
    server = make_server(ctx, ram_mb=10000, disk_mb=10000, cpus=2)
    for ram, disk, cpu in ((8501, 0, 1), (0, 9401, 1), (0, 0, 801)):
        assert not reserve(ctx, server.uuid, ram, disk, cpu)[0], (ram, disk, cpu)
    assert sums(ctx, server.uuid) == held()
    for ram, disk, cpu in ((8500, 0, 1), (0, 9400, 1), (0, 0, 798)):
        assert reserve(ctx, server.uuid, ram, disk, cpu)[0], (ram, disk, cpu)
    assert sums(ctx, server.uuid) == held(8500, 9400, 800, count=3, capped=3)
    # nothing left of any of them, not even one unit
    for ram, disk, cpu in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        assert not reserve(ctx, server.uuid, ram, disk, cpu or 1)[0], (ram, disk, cpu)


def test_a_zero_sized_machine_still_counts(ctx: Any) -> None:
    server = make_server(ctx, ram_mb=10000, disk_mb=10000)
    ok, machine = reserve(ctx, server.uuid, 0, 0, 0)
    assert ok
    assert sums(ctx, server.uuid) == held(count=1, uncapped=1)
    with ctx.transaction() as session:
        assert capacity.release(session, machine)
    assert sums(ctx, server.uuid) == held()


def test_the_machine_limit_exactly(ctx: Any) -> None:
    server = make_server(ctx)
    one = Policy(max_machines=1)
    assert reserve(ctx, server.uuid, policy=one)[0]
    assert not reserve(ctx, server.uuid, policy=one)[0]
    assert reserve(ctx, server.uuid, policy=Policy(max_machines=2))[0]


def test_a_cpu_cap_of_one_is_capped(ctx: Any) -> None:
    server = make_server(ctx)
    ok, machine = reserve(ctx, server.uuid, cpu=1)
    assert ok
    assert sums(ctx, server.uuid) == held(100, 100, 1, count=1, capped=1)
    assert not reserve(ctx, server.uuid, cpu=0)[0]  # an uncapped one may not join it
    with ctx.transaction() as session:
        assert capacity.commit(session, machine)
        assert capacity.release(session, machine)
    assert sums(ctx, server.uuid) == held()


def test_the_reservation_row_records_the_request(ctx: Any) -> None:
    server = make_server(ctx)
    machine, job = new_uuid(), new_uuid()
    with ctx.transaction() as session:
        assert capacity.reserve(session, server.uuid, machine, job, 1234, 5678, 90, POLICY)
    res = reservation(ctx, machine)
    assert (res.machine_uuid, res.server_uuid, res.job_uuid) == (machine, server.uuid, job)
    assert (res.ram_mb, res.disk_mb, res.cpu, res.state) == (1234, 5678, 90, "held")
    assert res.ended_at is None


def test_servers_in_maintenance_or_not_running_take_nothing(ctx: Any) -> None:
    for attrs in ({"maintenance": True}, {"status": "unknown"}, {"setup": False},
                  {"reserved": True}):
        server = make_server(ctx, **attrs)
        assert not reserve(ctx, server.uuid, image_uuid=new_uuid(), image_mb=10)[0], attrs
        assert sums(ctx, server.uuid) == held(), attrs
    assert claims(ctx) == set()


def test_a_refusal_on_one_server_leaves_the_others_alone(ctx: Any) -> None:
    full = make_server(ctx, ram_mb=1000)
    other = make_server(ctx, hostname="cn2")
    assert not reserve(ctx, full.uuid, ram=1000)[0]
    assert reserve(ctx, other.uuid)[0]
    assert sums(ctx, full.uuid) == held()
    assert sums(ctx, other.uuid) == held(100, 100, count=1, uncapped=1)


# -- images: what a claim costs, and what a refusal takes back ------------------------------


def test_an_image_size_without_an_image_takes_nothing(ctx: Any) -> None:
    server = make_server(ctx, disk_mb=10000)  # 9400 usable
    assert reserve(ctx, server.uuid, disk=9000, image_uuid=None, image_mb=500)[0]
    assert sums(ctx, server.uuid)["images"] == 0
    assert claims(ctx) == set()


def test_an_image_of_unknown_size_is_claimed_at_zero(ctx: Any) -> None:
    server = make_server(ctx)
    image = new_uuid()
    assert reserve(ctx, server.uuid, image_uuid=image)[0]
    assert claims(ctx) == {(server.uuid, image, 0)}
    assert sums(ctx, server.uuid)["images"] == 0


def test_disk_and_image_fit_exactly_together(ctx: Any) -> None:
    server = make_server(ctx, disk_mb=10000)  # 9400 usable
    image = new_uuid()
    assert not reserve(ctx, server.uuid, disk=9001, image_uuid=image, image_mb=400)[0]
    assert reserve(ctx, server.uuid, disk=9000, image_uuid=image, image_mb=400)[0]
    assert claims(ctx) == {(server.uuid, image, 400)}
    assert sums(ctx, server.uuid) == held(100, 9000, count=1, uncapped=1, images=400)


def test_a_refused_claim_takes_back_only_its_own_row(ctx: Any) -> None:
    """The refusal deletes this server's claim of this image: not the image's claim on
    another server, nor this server's claims of other images."""
    roomy = make_server(ctx, hostname="cn1")
    small = make_server(ctx, hostname="cn2", disk_mb=10000)  # 9400 usable
    image, other_image = new_uuid(), new_uuid()
    assert reserve(ctx, roomy.uuid, image_uuid=image, image_mb=500)[0]
    assert reserve(ctx, small.uuid, image_uuid=other_image, image_mb=300)[0]
    assert not reserve(ctx, small.uuid, disk=9000, image_uuid=image, image_mb=500)[0]
    assert claims(ctx) == {(roomy.uuid, image, 500), (small.uuid, other_image, 300)}
    assert sums(ctx, small.uuid)["images"] == 300


def test_a_forgotten_server_is_a_refusal_while_others_exist(ctx: Any) -> None:
    make_server(ctx)
    with ctx.transaction() as session:
        assert not capacity.reserve(session, new_uuid(), new_uuid(), new_uuid(), 100, 100, 0,
                                    POLICY, image_uuid=new_uuid(), image_mb=10)
    assert claims(ctx) == set() and count(ctx, Reservation) == 0


def test_first_claims_of_two_images_on_one_server_at_once_do_not_deadlock(ctx: Any) -> None:
    """Two provisions, each the first of its image on the same server, both past their
    claim before either updates the server. The claim's lock (FOR KEY SHARE) neither waits
    for the other's claim (a lock as strong as the UPDATE's would) nor stops the other's
    guarded UPDATE (a FOR SHARE would: each would wait for the other)."""
    server = make_server(ctx)
    claimed = {name: threading.Event() for name in ("a", "b")}
    overlapped: list[bool] = []
    local = threading.local()

    def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        name = getattr(local, "name", None)
        if name is None or " FOR " not in statement or "servers" not in statement:
            return
        claimed[name].set()
        if name == "a":  # a waits (a while) until b holds its claim too
            overlapped.append(claimed["b"].wait(timeout=5))

    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def provision(name: str) -> None:
        local.name = name
        try:
            with ctx.transaction() as session:
                results[name] = capacity.reserve(session, server.uuid, new_uuid(), new_uuid(),
                                                 100, 100, 0, POLICY, new_uuid(), 10)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    engine = ctx.sessions.kw["bind"]
    event.listen(engine, "after_cursor_execute", after)
    try:
        first = threading.Thread(target=provision, args=("a",))
        first.start()
        assert claimed["a"].wait(timeout=10)
        second = threading.Thread(target=provision, args=("b",))
        second.start()
        for thread in (first, second):
            thread.join(timeout=30)
    finally:
        event.remove(engine, "after_cursor_execute", after)
    assert not errors, errors
    assert overlapped == [True]
    assert results == {"a": True, "b": True}
    assert sums(ctx, server.uuid) == held(200, 200, count=2, uncapped=2, images=20)


# -- commit and release ----------------------------------------------------------------------


def test_commit_and_release_touch_only_their_own_server(ctx: Any) -> None:
    one, two = make_server(ctx, hostname="cn1"), make_server(ctx, hostname="cn2")
    _, machine = reserve(ctx, one.uuid, 1000, 2000, 30)
    _, bystander = reserve(ctx, two.uuid, 100, 200, 3)
    with ctx.transaction() as session:
        assert capacity.commit(session, machine)
    assert sums(ctx, one.uuid) == {**held(count=1, capped=1), "ram": 1000, "disk": 2000,
                                   "cpu": 30}
    with ctx.transaction() as session:
        assert capacity.release(session, machine)
    assert sums(ctx, one.uuid) == held()
    assert sums(ctx, two.uuid) == held(100, 200, 3, count=1, capped=1)
    assert reservation(ctx, bystander).state == "held"


def test_commit_then_release_twice(ctx: Any) -> None:
    server = make_server(ctx)
    _, machine = reserve(ctx, server.uuid, 1000, 2000, 0)
    with ctx.transaction() as session:
        assert capacity.commit(session, machine)
    res = reservation(ctx, machine)
    assert (res.state, res.ended_at) == ("committed", None)
    for expected in (True, False):
        with ctx.transaction() as session:
            assert capacity.release(session, machine) is expected
            assert capacity.commit(session, machine) is False
        assert sums(ctx, server.uuid) == held()
    assert reservation(ctx, machine).state == "released"
    with ctx.transaction() as session:
        assert capacity.release(session, new_uuid()) is False


def test_orphans_of_canceled_jobs_are_released(ctx: Any) -> None:
    server = make_server(ctx)
    job = add(ctx, Job(name="provision", execution="canceled"))
    with ctx.transaction() as session:
        assert capacity.reserve(session, server.uuid, new_uuid(), job.uuid, 100, 100, 0,
                                POLICY)
    with ctx.transaction() as session:
        assert capacity.release_orphans(session) == 1
    assert sums(ctx, server.uuid) == held()


# -- resize: growth held in flight, then committed or given back ----------------------------


def grow(ctx: Any, server_uuid: str, ram: int, disk: int, cpu: int) -> bool:
    with ctx.transaction() as session:
        return capacity.reserve_growth(session, server_uuid, ram, disk, cpu, POLICY)


def test_zero_growth_fits_anywhere_and_holds_nothing(ctx: Any) -> None:
    full = make_server(ctx, ram_mb=1000, ram_committed_mb=5000)  # already past its room
    written = server_row(ctx, full.uuid).updated_at
    assert grow(ctx, full.uuid, 0, 0, 0)
    assert grow(ctx, full.uuid, -100, -100, -10)  # a shrink holds nothing either
    assert grow(ctx, "", 0, 0, 0)  # a machine without a server
    with ctx.transaction() as session:
        capacity.release_growth(session, full.uuid, 0, 0, 0)
        capacity.release_growth(session, full.uuid, -5, -5, -5)
    assert sums(ctx, full.uuid) == {**held(), "ram": 5000}
    # not even an UPDATE of zeros: the row (and its lock) is left alone
    assert server_row(ctx, full.uuid).updated_at == written


def test_one_unit_of_each_resource_alone_is_held_and_given_back(ctx: Any) -> None:
    server = make_server(ctx)
    other = make_server(ctx, hostname="cn2")
    for ram, disk, cpu in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
        assert grow(ctx, server.uuid, ram, disk, cpu)
        assert sums(ctx, server.uuid) == held(ram, disk, cpu), (ram, disk, cpu)
        with ctx.transaction() as session:
            capacity.release_growth(session, server.uuid, ram, disk, cpu)
        assert sums(ctx, server.uuid) == held(), (ram, disk, cpu)
    assert grow(ctx, server.uuid, 10, 20, 30)
    assert sums(ctx, server.uuid) == held(10, 20, 30)
    assert sums(ctx, other.uuid) == held()


def test_growth_exact_fit_per_resource_on_a_used_server(ctx: Any) -> None:
    # RAM: 8500 usable, 1500 committed -> 7000; disk: 9400 - 400 images - 1000 = 8000
    server = make_server(ctx, ram_mb=10000, disk_mb=10000, images_mb=400,
                         ram_committed_mb=1000, ram_inflight_mb=500,
                         disk_committed_mb=600, disk_inflight_mb=400)
    assert not grow(ctx, server.uuid, 7001, 0, 0)
    assert not grow(ctx, server.uuid, 0, 8001, 0)
    assert grow(ctx, server.uuid, 7000, 8000, 5000)  # CPU shares are not checked for growth
    assert not grow(ctx, server.uuid, 1, 0, 0)
    assert not grow(ctx, server.uuid, 0, 1, 0)
    assert not grow(ctx, "no-such-server", 1, 0, 0)
    row = sums(ctx, server.uuid)
    assert (row["ram_inflight"], row["disk_inflight"], row["cpu_inflight"]) == (7500, 8400,
                                                                                5000)


def committed_machine(ctx: Any, server_uuid: str, ram: int = 1000, disk: int = 2000,
                      cpu: int = 50) -> str:
    _, machine = reserve(ctx, server_uuid, ram, disk, cpu)
    with ctx.transaction() as session:
        assert capacity.commit(session, machine)
    return machine


def test_commit_resize_up_to_the_exact_fit(ctx: Any) -> None:
    # RAM 8500 usable: a machine of 1000 grows by 7500 to fill it exactly
    server = make_server(ctx, ram_mb=10000, disk_mb=10000, cpus=1)
    bystander = make_server(ctx, hostname="cn2")
    machine = committed_machine(ctx, server.uuid)
    assert not grow(ctx, server.uuid, 7501, 0, 0)
    assert grow(ctx, server.uuid, 7500, 3, 7)
    with ctx.transaction() as session:
        assert capacity.commit_resize(session, machine, server.uuid,
                                      {"ram_mb": 7500, "disk_mb": 3, "cpu": 7},
                                      {"ram_mb": 7500, "disk_mb": 3, "cpu": 7})
    assert sums(ctx, server.uuid) == {**held(count=1, capped=1), "ram": 8500, "disk": 2003,
                                      "cpu": 57}
    res = reservation(ctx, machine)
    assert (res.ram_mb, res.disk_mb, res.cpu, res.state) == (8500, 2003, 57, "committed")
    assert not grow(ctx, server.uuid, 1, 0, 0)
    assert sums(ctx, bystander.uuid) == held()
    with ctx.transaction() as session:  # the reservation follows the size
        assert capacity.release(session, machine)
    assert sums(ctx, server.uuid) == held()


def test_commit_resize_down_frees_room(ctx: Any) -> None:
    server = make_server(ctx, ram_mb=10000, disk_mb=10000)
    machine = committed_machine(ctx, server.uuid, 8500, 9400, 50)
    with ctx.transaction() as session:
        assert capacity.commit_resize(session, machine, server.uuid, {},
                                      {"ram_mb": -500, "disk_mb": -400, "cpu": -20})
    assert sums(ctx, server.uuid) == {**held(count=1, capped=1), "ram": 8000, "disk": 9000,
                                      "cpu": 30}
    res = reservation(ctx, machine)
    assert (res.ram_mb, res.disk_mb, res.cpu) == (8000, 9000, 30)
    assert grow(ctx, server.uuid, 500, 400, 0)


def test_commit_resize_of_one_resource_leaves_the_others(ctx: Any) -> None:
    server = make_server(ctx)
    machine = committed_machine(ctx, server.uuid)
    for key, column in (("ram_mb", "ram"), ("disk_mb", "disk"), ("cpu", "cpu")):
        before = sums(ctx, server.uuid)
        assert grow(ctx, server.uuid, **{"ram": 0, "disk": 0, "cpu": 0, column: 5})
        with ctx.transaction() as session:
            assert capacity.commit_resize(session, machine, server.uuid, {key: 5}, {key: 5})
        assert sums(ctx, server.uuid) == {**before, column: before[column] + 5}, key
    res = reservation(ctx, machine)
    assert (res.ram_mb, res.disk_mb, res.cpu) == (1005, 2005, 55)


def test_commit_resize_of_a_machine_without_usage_gives_the_growth_back(ctx: Any) -> None:
    server = make_server(ctx)
    _, held_machine = reserve(ctx, server.uuid, 100, 100, 0)  # held, not committed
    assert grow(ctx, server.uuid, 300, 200, 0)
    with ctx.transaction() as session:
        assert not capacity.commit_resize(session, held_machine, server.uuid,
                                          {"ram_mb": 300, "disk_mb": 200},
                                          {"ram_mb": 300, "disk_mb": 200})
        assert not capacity.commit_resize(session, new_uuid(), server.uuid, {}, {"ram_mb": 9})
    assert sums(ctx, server.uuid) == held(100, 100, count=1, uncapped=1)
    assert reservation(ctx, held_machine).ram_mb == 100


def test_commit_resize_changes_only_its_machine(ctx: Any) -> None:
    server = make_server(ctx)
    machine, other = committed_machine(ctx, server.uuid), committed_machine(ctx, server.uuid)
    with ctx.transaction() as session:
        assert capacity.commit_resize(session, machine, server.uuid, {}, {"ram_mb": 24})
    assert (reservation(ctx, machine).ram_mb, reservation(ctx, other).ram_mb) == (1024, 1000)
    assert sums(ctx, server.uuid)["ram"] == 2024
