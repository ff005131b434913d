"""Placement decision latency: fleets of 100, 1,000 and 10,000 servers, 20 machines each.

The snapshot is built in memory the way ``headnode.services.fleet`` builds it from the
database (one row of aggregate columns per server -> ``ServerState``, with the same
function), so what is measured
is the decision itself: every hard filter over every server, then the scorers over the
survivors. Machines are never walked: their sums are on the server rows. Prints, per fleet
size, p50 and p99 of one decision (with and without an affinity rule), the time to build
the snapshot from rows, and the peak memory of snapshot + decision (tracemalloc), once
per candidate limit (``--candidates``: 0 visits and scores every server, as before
SDC_PLACEMENT_CANDIDATES; 100 is the setting's default), all in the same run.

    .venv/bin/python bench/placement.py [--sizes 100,1000,10000] [--decisions 300]
                                        [--candidates 0,100]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile  # noqa: E402
from headnode.placement.affinity import parse_rules  # noqa: E402
from headnode.placement.pipeline import DEFAULT_PIPELINE, Pipeline  # noqa: E402
from headnode.placement.state import (  # noqa: E402
    MachineRef,
    PlacementRequest,
    Policy,
    Snapshot,
)
from headnode.services.fleet import states_from_rows  # noqa: E402

MACHINES_PER_SERVER = 20
#: DAPI's bin/sim.js fleet shape: 256 GiB servers with 3.3 TB pools
SERVER_RAM_MB = 262_144
SERVER_DISK_MB = 3_336 * 1024
SERVER_CPUS = 48
MACHINE_RAM_MB = 4096
MACHINE_DISK_MB = 40_960
MACHINE_CPU_CAP = 200
TARGETS_MS = {1_000: 5.0, 10_000: 50.0}
RUNS_ZONES = '{"os": ["smartos", "linux"], "type": ["zone-dataset", "lx-dataset", "docker"]}'
NIC_TAGS = '["admin", "external"]'
RUNS_HVM = ('{"os": ["smartos", "linux", "windows"], '
            '"type": ["zone-dataset", "lx-dataset", "docker", "zvol"]}')


def server_rows(n: int, rng: random.Random) -> list[tuple[Any, ...]]:
    """What ``SELECT`` of fleet.SERVER_COLUMNS returns: one tuple per server."""
    rows = []
    for i in range(n):
        machines = MACHINES_PER_SERVER
        # a realistic spread: some servers unset up, some reserved, a few down
        status = "unknown" if i % 97 == 0 else "running"
        rows.append((
            f"{i:08d}-0000-4000-8000-{rng.getrandbits(48):012x}", f"cn{i}", status,
            i % 53 != 0, i % 89 == 0, False, i == 0, "smartos",  # ..., maintenance, ...
            "{}" if i % 41 else '{"ssd": true}',
            # what the node runs (sysinfo "SDC Runs"); every third from an older agent
            None if i % 3 == 0 else RUNS_HVM if i % 3 == 1 else RUNS_ZONES,
            NIC_TAGS,  # sysinfo "NIC Names"
            SERVER_RAM_MB, SERVER_CPUS, SERVER_DISK_MB,
            machines * MACHINE_RAM_MB + rng.randrange(0, 8) * MACHINE_RAM_MB,
            machines * MACHINE_DISK_MB, machines * MACHINE_CPU_CAP, 2048, machines,
            machines, 0,
        ))
    return rows


def owner_machines(rows: list[tuple[Any, ...]], rng: random.Random) -> list[MachineRef]:
    """The requesting owner's 40 machines somewhere in the fleet (spread and affinity)."""
    return [MachineRef(rng.choice(rows)[0], f"web{i}", f"m{i}", {"role": "web"})
            for i in range(40)]


def time_decisions(snapshot: Snapshot, request: PlacementRequest, policy: Policy,
                   count: int, rng: random.Random,
                   pipeline: Pipeline = DEFAULT_PIPELINE) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        decision = pipeline.decide(snapshot, request, policy, rng)
        times.append(time.perf_counter() - start)
        assert decision.server is not None
    return times


def bench(n: int, decisions: int, candidates: int = 0) -> dict[str, float]:
    rng = random.Random(n)
    policy = Policy()
    pipeline = Pipeline(candidates=candidates)
    rows = server_rows(n, rng)
    machines = owner_machines(rows, rng)
    plain = PlacementRequest(ram_mb=MACHINE_RAM_MB, disk_mb=MACHINE_DISK_MB,
                             cpu_cap=MACHINE_CPU_CAP, owner_uuid="owner", image_os="smartos",
                             image_type="zone-dataset")
    spread = PlacementRequest(**{**plain.__dict__,
                                 "affinity": parse_rules(["instance!=web*", "role!=~db"])})

    start = time.perf_counter()
    snapshot = Snapshot(states_from_rows(rows), machines)
    build_ms = (time.perf_counter() - start) * 1000

    time_decisions(snapshot, plain, policy, 5, rng, pipeline)  # warm up
    gc.collect()
    plain_times = time_decisions(snapshot, plain, policy, decisions, rng, pipeline)
    affinity_times = time_decisions(snapshot, spread, policy, decisions, rng, pipeline)

    del snapshot
    gc.collect()
    tracemalloc.start()
    snapshot = Snapshot(states_from_rows(rows), machines)
    pipeline.decide(snapshot, spread, policy, rng)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "servers": n, "build_ms": build_ms,
        "p50_ms": statistics.median(plain_times) * 1000,
        "p99_ms": percentile(plain_times, 0.99) * 1000,
        "aff_p50_ms": statistics.median(affinity_times) * 1000,
        "aff_p99_ms": percentile(affinity_times, 0.99) * 1000,
        "peak_mib": peak / (1 << 20),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--candidates", default="0,100",
                        help="candidate limits to compare (0: every server)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    limits = [int(k) for k in args.candidates.split(",")]
    print(f"placement: one decision over fleets of {MACHINES_PER_SERVER} machines per server "
          f"({args.decisions} decisions each; python {sys.version.split()[0]})")
    print(f"{'servers':>8} {'limit':>6} {'p50 ms':>8} {'p99 ms':>8} {'aff p50':>8} "
          f"{'aff p99':>8} {'build ms':>9} {'peak MiB':>9}  target")
    missed = 0
    for n in sizes:
        for limit in limits:
            r = bench(n, args.decisions if n < 10_000 else max(50, args.decisions // 3),
                      limit)
            target = TARGETS_MS.get(n)
            verdict = ""
            if target is not None:
                ok = r["p50_ms"] <= target
                missed += not ok
                verdict = f"p50 <= {target:g} ms: {'ok' if ok else 'MISSED'}"
            print(f"{n:>8} {limit:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
                  f"{r['aff_p50_ms']:>8.2f} {r['aff_p99_ms']:>8.2f} {r['build_ms']:>9.1f} "
                  f"{r['peak_mib']:>9.2f}  {verdict}")
    print("(limit: the candidate limit, 0 = every server; aff: with the rules "
          "instance!=web* and role!=~db over the owner's 40 machines; "
          "build: rows -> snapshot, as the service does per decision)")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
