"""What one machine create costs the API process: ``POST /ops/machines`` in process.

A private PostgreSQL and redis-server, 100 servers with room, one account, package and image;
then ``--creates`` creates one after another through the Flask test client of the real app
(its real Celery job queue sends each job to the private Redis). Two rounds: first with no
network (no NIC to allocate, as bench/provision_throughput.py runs), then with a public /16
(one NIC each). Per round: CPU ms per create (this process only: PostgreSQL and Redis are
other processes), wall-clock p50/p99, and SQL statements per create.

    .venv/bin/python bench/api_create.py [--servers 100] [--creates 500]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import StatementCounter, percentile, populate, private_stack  # noqa: E402
from headnode.api.app import create_app  # noqa: E402
from headnode.config import get_settings  # noqa: E402
from headnode.services.context import ServiceContext  # noqa: E402
from headnode.store.db import engine_for  # noqa: E402
from schemas.agent import HEADNODE_QUEUE  # noqa: E402

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: creates before each measured round: imports, caches and pooled connections warm up
WARMUP = 20
#: no workflow worker takes the jobs: the bench empties their queue this often, so that the
#: API's admission control (which refuses provisions while the queue is long) never refuses
DRAIN_EVERY = 20


def run_round(label: str, client: Any, counter: StatementCounter, first: int,
              creates: int, show_sql: bool, drain: Callable[[], None]) -> None:
    def create(i: int) -> None:
        answer = client.post("/ops/machines", headers=AUTH, json={
            "owner": "bench", "package": "g1-512m", "image": "base-64",
            "alias": f"bench-{i}"})
        if answer.status_code != 202:
            raise SystemExit(f"create {i}: {answer.status_code} {answer.get_json()}")

    for i in range(first, first + WARMUP):
        create(i)
    walls: list[float] = []
    cpu = 0.0
    statements_before = counter.count
    for i in range(first + WARMUP, first + WARMUP + creates):
        if i % DRAIN_EVERY == 0:
            drain()  # outside the measured time
        cpu_before, started = time.process_time(), time.perf_counter()
        create(i)
        walls.append(time.perf_counter() - started)
        cpu += time.process_time() - cpu_before
    statements = counter.count - statements_before
    print(f"{label}: {creates} creates")
    print(f"  CPU per create: {cpu / creates * 1e3:.2f} ms (this process)")
    print(f"  wall per create: p50 {statistics.median(walls) * 1e3:.2f} ms, "
          f"p99 {percentile(walls, 0.99) * 1e3:.2f} ms")
    print(f"  SQL statements per create: {statements / creates:.1f}")
    if show_sql:
        counter.last.clear()
        create(first + WARMUP + creates)
        print("  the statements of one more create:")
        for statement in counter.last:
            print("    " + " ".join(statement.split())[:160])


def profile(client: Any, first: int, creates: int, drain: Callable[[], None]) -> None:
    profiler = cProfile.Profile(time.process_time)  # CPU, not waits
    for i in range(first, first + creates):
        if i % DRAIN_EVERY == 0:
            drain()
        body = {"owner": "bench", "package": "g1-512m", "image": "base-64",
                "alias": f"bench-{i}"}
        profiler.enable()
        client.post("/ops/machines", headers=AUTH, json=body)
        profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--creates", type=int, default=500, help="per round")
    parser.add_argument("--show-sql", action="store_true",
                        help="print the statements of one create per round")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="then profile N more creates (cProfile) and print the top "
                             "functions by cumulative time")
    args = parser.parse_args()
    with private_stack("create") as stack:
        assert stack.redis is not None
        settings = get_settings(database_url=stack.database_url, redis_url=stack.redis.url,
                                data_dir=stack.workdir / "data", operator_token=TOKEN)
        app = create_app(settings)  # the real Celery job queue, on the private Redis
        ctx: ServiceContext = app.extensions["sdc"]
        populate(ctx, args.servers)
        counter = StatementCounter(engine_for(settings.resolved_database_url))
        print(f"{args.servers} servers, in-process Flask test client, Celery to a private "
              "Redis")
        queue = stack.redis.client()

        def drain() -> None:
            # kombu keeps a queue as one list per message priority, each named after it
            for key in queue.scan_iter(match=f"{HEADNODE_QUEUE}*", _type="list"):
                queue.delete(key)

        with app.test_client() as client:
            run_round("no network", client, counter, 0, args.creates, args.show_sql, drain)
            answer = client.post("/ops/networks", headers=AUTH, json={
                "name": "public", "subnet": "10.64.0.0/16"})
            assert answer.status_code in (200, 201), answer.get_json()
            run_round("one public network (one NIC each)", client, counter,
                      args.creates + WARMUP + 1, args.creates, args.show_sql, drain)
            if args.profile:
                profile(client, 2 * (args.creates + WARMUP + 1), args.profile, drain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
