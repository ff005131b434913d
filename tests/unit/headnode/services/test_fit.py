"""One rule for "fits" (placement/fit.py): for any fleet and request, the placement filters
pass on a server exactly when the reservation's guarded UPDATE succeeds on it, on the real
PostgreSQL. The fleet is read back through the loader a create uses, so whether a server
holds the image comes from ``server_images`` as the guard's claim sees it."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from headnode.placement import fit
from headnode.placement.pipeline import DEFAULT_PIPELINE
from headnode.placement.state import Context, PlacementRequest, Policy, ServerState
from headnode.services import capacity, fleet
from headnode.store.models import Server, ServerImage, new_uuid

IMAGE = "0c3a6e2e-5d3f-4a58-9a0b-7e5a3c1d2b40"
OWNER = "5f1c9a7e-2b4d-4e6f-8a1c-3d5e7f9a1b2c"

policies = st.builds(
    Policy,
    reservation_ratio=st.sampled_from([0.15, 0.0, 0.1, 1 / 3]),
    pool_usable_ratio=st.sampled_from([0.94, 1.0, 0.9, 0.7]),
    ram_overprovision=st.sampled_from([1.0, 1.5, 2.0, 0.75]),
    disk_overprovision=st.sampled_from([1.0, 1.25, 3.0]),
    cpu_overprovision=st.sampled_from([4.0, 1.0, 2.5, 1 / 3]),
    max_machines=st.sampled_from([224, 224, 300, 3, 1]),
)


@st.composite
def used_of(draw: Any, size: int, share: float) -> tuple[int, int]:
    """In flight and committed use: up to ``share`` of the size, sometimes beyond it."""
    within = st.integers(0, int(size * share))
    total = draw(st.one_of(within, within, within, st.integers(0, 2 * size + 10)))
    inflight = draw(st.integers(0, total))
    return inflight, total - inflight


KINDS = {"none": (0, 0), "capped": (2, 0), "uncapped": (0, 2), "both": (1, 1)}


@st.composite
def servers(draw: Any, healthy: bool = False) -> dict[str, Any]:
    """Any server; a ``healthy`` one takes machines of either kind and has room left, so
    that the sizes decide."""
    ram_mb, cpus = draw(st.integers(0, 262_144)), draw(st.integers(0, 64))
    disk_mb = draw(st.integers(0, 4_000_000))
    share = 0.4 if healthy else 1.0
    ram_inflight, ram_committed = draw(used_of(ram_mb, share))
    disk_inflight, disk_committed = draw(used_of(disk_mb // 2, share))
    cpu_inflight, cpu_committed = draw(used_of(cpus * 100, share))

    def pick(good: Any, bad: Any) -> Any:
        return good if healthy else draw(st.sampled_from([good] * 9 + [bad]))

    capped_count, uncapped_count = KINDS[pick("none", draw(st.sampled_from(sorted(KINDS))))]
    return {
        "status": pick("running", "unknown"), "setup": pick(True, False),
        "reserved": pick(False, True), "maintenance": pick(False, True),
        "ram_mb": ram_mb, "cpus": cpus, "disk_mb": disk_mb,
        "ram_inflight_mb": ram_inflight, "ram_committed_mb": ram_committed,
        "disk_inflight_mb": disk_inflight, "disk_committed_mb": disk_committed,
        "cpu_inflight": cpu_inflight, "cpu_committed": cpu_committed,
        "images_mb": draw(st.integers(0, 50_000)),
        "machine_count": draw(st.integers(0, 2) if healthy else st.integers(0, 301)),
        "capped_count": capped_count, "uncapped_count": uncapped_count,
        "holds_image": draw(st.booleans()),
    }


#: a fleet: mostly a healthy first server (the request is sized against it), then any
fleets = st.tuples(servers(healthy=True) | servers(),
                   st.lists(servers(), max_size=3)).map(lambda t: [t[0], *t[1]])

#: which resource a request is sized at the very edge of (the others fit, mostly)
EDGES = ("ram", "disk", "cpu", "none")


def sized(data: st.DataObject, room: float, at_edge: bool, label: str) -> int:
    """A need within a few MiB of the room left where two rules could differ, else mostly
    one that fits."""
    edge = max(0, math.floor(room))
    if at_edge:
        return data.draw(st.integers(-2, 2).map(lambda d: max(0, edge + d)), label=label)
    fits = st.integers(0, edge)
    return data.draw(st.one_of(fits, fits, fits, st.integers(0, 300_000)), label=label)


def draw_request(data: st.DataObject, first: ServerState, holds: bool,
                 policy: Policy) -> PlacementRequest:
    """A request sized against the first server of the fleet, so that boundaries come up."""
    edge = data.draw(st.sampled_from(EDGES), label="edge")
    capped = edge == "cpu" or data.draw(st.booleans(), label="capped")
    cpu_room = fit.unreserved_cpu(first, policy)
    cpu_cap = max(1, sized(data, cpu_room, edge == "cpu", "cpu_cap")) if capped else 0
    image_mb = data.draw(st.sampled_from([0, 300, 500, 9000]), label="image_mb")
    disk_room = fit.unreserved_disk(first, policy) - (0 if holds else image_mb)
    return PlacementRequest(
        ram_mb=sized(data, fit.unreserved_ram(first, policy), edge == "ram", "ram_mb"),
        disk_mb=sized(data, disk_room, edge == "disk", "disk_mb"),
        cpu_cap=cpu_cap, image_uuid=IMAGE, image_mb=image_mb)


def as_state(row: dict[str, Any], policy: Policy) -> ServerState:
    return ServerState(
        uuid="x", status=row["status"], setup=row["setup"], reserved=row["reserved"],
        maintenance=row["maintenance"],
        ram_mb=row["ram_mb"], cpus=row["cpus"], disk_mb=row["disk_mb"],
        ram_used_mb=row["ram_inflight_mb"] + row["ram_committed_mb"],
        disk_used_mb=row["disk_inflight_mb"] + row["disk_committed_mb"],
        cpu_used=row["cpu_inflight"] + row["cpu_committed"], images_mb=row["images_mb"],
        machine_count=row["machine_count"], capped_count=row["capped_count"],
        uncapped_count=row["uncapped_count"])


def insert_fleet(session: Any, rows: list[dict[str, Any]]) -> None:
    for i, row in enumerate(rows):
        attrs = {k: v for k, v in row.items() if k != "holds_image"}
        uuid = f"{i:08d}-0000-4000-8000-000000000000"
        session.add(Server(uuid=uuid, hostname=f"cn{i}", backend="sim", **attrs))
        if row["holds_image"]:
            session.add(ServerImage(server_uuid=uuid, image_uuid=IMAGE, size_mb=1))
    session.flush()


def reserves(session: Any, server_uuid: str, request: PlacementRequest,
             policy: Policy) -> bool:
    """Whether the guard takes the request on this server; undone either way."""
    savepoint = session.begin_nested()
    try:
        return capacity.reserve(session, server_uuid, new_uuid(), new_uuid(), request.ram_mb,
                                request.disk_mb, request.cpu_cap, policy, request.image_uuid,
                                request.image_mb)
    finally:
        savepoint.rollback()


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(rows=fleets, policy=policies,
       with_machines=st.booleans(), data=st.data())
def test_filters_pass_exactly_when_the_reservation_succeeds(
        ctx: Any, rows: list[dict[str, Any]], policy: Policy, with_machines: bool,
        data: st.DataObject) -> None:
    request = draw_request(data, as_state(rows[0], policy), rows[0]["holds_image"], policy)
    with ctx.read() as session, session.begin():
        try:
            insert_fleet(session, rows)
            # both ways a create reads the fleet: with the owner's machines, or their counts
            snapshot = fleet.load_snapshot(session, OWNER, with_machines=with_machines,
                                           image_uuid=IMAGE)
            context = Context.build(request, ())
            passing, _ = DEFAULT_PIPELINE.passing(snapshot.servers, request, policy, context)
            passed = {s.uuid for s in passing}
            event(f"{len(passed)} of {len(snapshot.servers)} servers pass")
            capped = request.cpu_cap > 0
            for server in snapshot.servers:
                taken = reserves(session, server.uuid, request, policy)
                assert (server.uuid in passed) == taken, (server, request, policy)
                image_mb = fit.image_to_import(server.images, IMAGE, request.image_mb)
                assert fit.fits(server, policy, fit.PYTHON, capped, request.ram_mb,
                                request.disk_mb, request.cpu_cap, image_mb) == taken
            # The whole decision agrees too: it picks a server the guard takes, or refuses
            # only when no server would be taken.
            decision = DEFAULT_PIPELINE.decide(snapshot, request, policy)
            assert (decision.server is None) == (not passed)
            if decision.server is not None:
                assert reserves(session, decision.server.uuid, request, policy)
        finally:
            session.rollback()  # nothing stays: the next example starts on empty tables


def test_a_snapshot_knows_which_servers_hold_the_image(ctx: Any) -> None:
    rows = [{"holds_image": holds, "status": "running", "setup": True, "reserved": False,
             "ram_mb": 1024, "cpus": 1, "disk_mb": 1024} for holds in (True, False)]
    with ctx.read() as session, session.begin():
        insert_fleet(session, rows)
        for with_machines in (True, False):
            for image, expected in ((IMAGE, [{IMAGE}, set()]), ("", [set(), set()])):
                snapshot = fleet.load_snapshot(session, OWNER, with_machines=with_machines,
                                               image_uuid=image)
                found = sorted(snapshot.servers, key=lambda s: s.hostname)
                assert [set(s.images) for s in found] == expected, (with_machines, image)
        session.rollback()
