"""What a create's placement costs (fleet snapshot + decision) at 100 and 10,000 servers in
PostgreSQL: the old path (every server read and decoded per create) against the API
process's snapshot (headnode/services/fleet_cache.py), in the same run.

A private PostgreSQL per size, ``N`` set-up servers as registered nodes describe themselves
(sysinfo "SDC Runs" and "NIC Names", some with traits), the requested image held by half of
them. Between two measured placements, ``--churn`` servers change (a committed UPDATE of
their in-flight RAM, as other creates and status reports do), outside the measured time.
Per size, path and candidate limit (``--candidates``: 0 visits and scores every server, as
before SDC_PLACEMENT_CANDIDATES; 100 is its default): p50 and p99 of the snapshot, of the
decision, and of both.

- ``old``: fleet.load_snapshot, as every create did before.
- ``delta``: the cache, refreshed on every create (``fresh``: the rows changed since the
  last read): the most a create pays, as when its pick was refused.
- ``cached``: the cache as a create asks it (refreshed when older than MAX_AGE), creates
  back to back: what creates pay on average at that rate.

    .venv/bin/python bench/placement_snapshot.py [--sizes 100,10000] [--creates 200]
                                                 [--candidates 0,100]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, update  # noqa: E402

from bench.common import percentile, private_stack  # noqa: E402
from headnode.config import get_settings  # noqa: E402
from headnode.placement.state import PlacementRequest, Snapshot  # noqa: E402
from headnode.services import fleet, fleet_cache, placement  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.models import (  # noqa: E402
    Account,
    Image,
    Package,
    Server,
    ServerImage,
    new_uuid,
    utcnow,
)
from schemas.agent import SYSINFO_RUNS  # noqa: E402

RUNS = {"os": ["smartos", "linux"], "type": ["zone-dataset", "lx-dataset", "docker"]}
NIC_NAMES = ["admin", "external"]
ROWS_PER_INSERT = 1000

Load = Callable[[Any, PlacementRequest], Snapshot]


def server_rows(n: int) -> list[dict[str, Any]]:
    now = utcnow()
    return [{"uuid": new_uuid(), "hostname": f"cn{i}", "status": "running", "setup": True,
             "reserved": False, "maintenance": False, "headnode": False, "backend": "sim",
             "traits": {"ssd": True} if i % 41 == 0 else {},
             "sysinfo": {SYSINFO_RUNS: RUNS, fleet.SYSINFO_NIC_NAMES: NIC_NAMES,
                         "Hostname": f"cn{i}", "CPU Total Cores": 48},
             "ram_mb": 262_144, "cpus": 48, "disk_mb": 4_000_000,
             "ram_inflight_mb": 0, "disk_inflight_mb": 0, "cpu_inflight": 0,
             "ram_committed_mb": 4096 * (i % 20), "disk_committed_mb": 40_960 * (i % 20),
             "cpu_committed": 0, "machine_count": i % 20, "capped_count": 0,
             "uncapped_count": i % 20, "images_mb": 300, "pool_used_mb": 0,
             "last_heartbeat": time.time(), "created_at": now, "updated_at": now}
            for i in range(n)]


def populate(ctx: ServiceContext, n: int) -> tuple[list[str], PlacementRequest]:
    rows = server_rows(n)
    with ctx.transaction() as session:
        for start in range(0, n, ROWS_PER_INSERT):
            session.execute(insert(Server), rows[start:start + ROWS_PER_INSERT])
        account = Account(login="bench", email="bench@example.com")
        package = Package(name="g1-4g", memory=4096, disk=40_960)
        image = Image(name="base-64", version="24.4.1", os="smartos", size_mb=300)
        session.add_all([account, package, image])
        session.flush()
        session.execute(insert(ServerImage), [
            {"server_uuid": r["uuid"], "image_uuid": image.uuid, "size_mb": 300,
             "created_at": r["created_at"]} for r in rows[::2]])
        request = placement.build_request(package, image, account.uuid,
                                          nic_tags=frozenset({"external"}))
    return [r["uuid"] for r in rows], request


def churn(ctx: ServiceContext, uuids: list[str], count: int, rng: random.Random) -> None:
    with ctx.transaction() as session:
        session.execute(update(Server).where(Server.uuid.in_(rng.sample(uuids, count)))
                        .values(ram_inflight_mb=rng.randrange(0, 8) * 4096))


def measure(ctx: ServiceContext, load: Load, request: PlacementRequest, uuids: list[str],
            creates: int, changed: int) -> dict[str, list[float]]:
    pipeline, policy = placement.pipeline_for(ctx), placement.policy_for(ctx)
    rng = random.Random(len(uuids))
    times: dict[str, list[float]] = {"snapshot": [], "decision": [], "total": []}
    for i in range(creates + 5):  # the first five warm up (a full read, compiled SQL)
        churn(ctx, uuids, changed, rng)
        with ctx.transaction() as session:  # a create's own transaction, as _place runs
            started = time.perf_counter()
            snapshot = load(session, request)
            read = time.perf_counter()
            decision = pipeline.decide(snapshot, request, policy)
            done = time.perf_counter()
        assert decision.server is not None, decision.explain(request)
        if i >= 5:
            times["snapshot"].append(read - started)
            times["decision"].append(done - read)
            times["total"].append(done - started)
    return times


def old_path(session: Any, request: PlacementRequest) -> Snapshot:
    return fleet.load_snapshot(session, request.owner_uuid, with_machines=False,
                               image_uuid=request.image_uuid)


def delta_path(session: Any, request: PlacementRequest) -> Snapshot:
    return fleet_cache.load_snapshot(session, request.owner_uuid, with_machines=False,
                                     image_uuid=request.image_uuid, fresh=True)


def cached_path(session: Any, request: PlacementRequest) -> Snapshot:
    return fleet_cache.load_snapshot(session, request.owner_uuid, with_machines=False,
                                     image_uuid=request.image_uuid)


PATHS: dict[str, Load] = {"old": old_path, "delta": delta_path, "cached": cached_path}


def ms(values: list[float], q: float | None = None) -> float:
    return 1000 * (statistics.median(values) if q is None else percentile(values, q))


def bench_size(n: int, creates: int, changed: int, limits: list[int]) -> None:
    with private_stack(f"snapshot{n}", redis=False) as stack:
        settings = get_settings(database_url=stack.database_url,
                                data_dir=stack.workdir / "data")
        uuids, request = populate(ServiceContext(settings), n)
        fleet_cache.forget_all()
        for name, load in PATHS.items():
            for limit in limits:
                ctx = ServiceContext(dataclasses.replace(settings,
                                                         placement_candidates=limit))
                t = measure(ctx, load, request, uuids, creates, min(changed, n))
                print(f"{n:>8} {name:>7} {limit:>6} {ms(t['snapshot']):>9.2f}"
                      f" {ms(t['snapshot'], .99):>9.2f}"
                      f" {ms(t['decision']):>9.2f} {ms(t['decision'], .99):>9.2f}"
                      f" {ms(t['total']):>9.2f} {ms(t['total'], .99):>9.2f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,10000")
    parser.add_argument("--creates", type=int, default=200, help="measured, per path")
    parser.add_argument("--churn", type=int, default=5,
                        help="servers changed between two placements")
    parser.add_argument("--candidates", default="0,100",
                        help="candidate limits to compare (0: every server)")
    args = parser.parse_args()
    limits = [int(k) for k in args.candidates.split(",")]
    print(f"placement of one create: snapshot + decision, ms ({args.creates} per path, "
          f"{args.churn} servers changed between two; cache MAX_AGE "
          f"{fleet_cache.MAX_AGE:g} s; python {sys.version.split()[0]})")
    print(f"{'servers':>8} {'path':>7} {'limit':>6} {'snap p50':>9} {'snap p99':>9} {'dec p50':>9} "
          f"{'dec p99':>9} {'all p50':>9} {'all p99':>9}")
    for n in (int(s) for s in args.sizes.split(",")):
        bench_size(n, args.creates, args.churn, limits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
