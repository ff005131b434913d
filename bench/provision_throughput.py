"""Provisioning throughput: a mock cloud of 100 servers, 500 provisions through the API.

Everything runs as it does in production, on this machine: PostgreSQL, Redis, the API under
gunicorn, the workflow worker, beat, and one mockcloud process hosting the sim nodes (sim
latency 0, so what is measured is the orchestration itself). Prints provisions/s, p50 and
p99 POST->running latency (from the POST that was accepted, and from the first try when the
API answered 429 while its workflow worker was behind), and head-node CPU-seconds per
provision. It does so twice, each on a fresh cloud: with signed messages (as deployed) and
with signing and checking turned off, so the cost of signing shows beside it. As a baseline
measured
in the same run (this machine is shared and noisy), it also prints the rate of a plain
authenticated GET through the same API and clients.

    .venv/bin/python bench/provision_throughput.py [--servers 100] [--provisions 500]
        [--signing both|on|off]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile  # noqa: E402
from headnode.cli.client import ApiError, OpsClient  # noqa: E402
from headnode.store.migrate import upgrade  # noqa: E402
from sdccommon.signing import UNSIGNED_ENV  # noqa: E402
from tests.support import credentials  # noqa: E402
from tests.support.headnode_env import headnode_env  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402
from tests.support.services import PostgresServer, RedisServer, postgres_bin_dir  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

SDC = str(Path(sys.executable).parent / "sdc")
TOKEN = "bench-token"
HEADNODE_PROCS = ("api", "worker", "beat")


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """CPU time of a process and, with ``tree``, all its descendants (gunicorn and Celery
    fork workers)."""
    try:
        root = psutil.Process(pid)
        total = 0.0
        for proc in [root, *(root.children(recursive=True) if tree else [])]:
            times = proc.cpu_times()
            total += times.user + times.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def start_cloud(args: argparse.Namespace, workdir: Path, signed: bool
                ) -> tuple[ProcessGroup, OpsClient, str, Any, Any]:
    redis = RedisServer(shutil.which("redis-server") or "/usr/bin/redis-server",
                        workdir / "redis", free_port())
    (workdir / "redis").mkdir()
    redis.start()
    pg_dir = Path(tempfile.mkdtemp(prefix="sdc-bench-pg-"))
    pg = PostgresServer(postgres_bin_dir(), pg_dir, free_port())
    pg.start()
    database_url = pg.create_database("sdc_bench")
    upgrade(database_url)
    port = free_port()
    env = headnode_env(database_url, redis.url, workdir / "headnode", TOKEN, port,
                       args.api_workers, **{
                           **({} if signed else {UNSIGNED_ENV: "1"}),
                           **({"SDC_WORKER_CONCURRENCY": str(args.worker_concurrency)}
                              if args.worker_concurrency else {}),
                           **dict(pair.split("=", 1) for pair in args.env)})
    # throttled_wait=0: the bench waits out 429s itself, to time the accepted POST
    api = OpsClient(f"http://127.0.0.1:{port}", TOKEN, timeout=60, throttled_wait=0)
    procs = ProcessGroup(workdir / "logs")
    procs.spawn("api", [SDC, "headnode", "serve"], env=env, ready=api.ping, timeout=60)
    procs.spawn("worker", [SDC, "headnode", "worker", "--loglevel", args.worker_loglevel], env=env)
    procs.spawn("beat", [SDC, "headnode", "beat", "--loglevel", "WARNING"], env=env)
    credentials.issue_mockcloud(workdir / "mock", args.servers, "bench")
    procs.spawn("mockcloud", [SDC, "mockcloud", "--servers", str(args.servers),
                              "--prefix", "bench", "--data-dir", str(workdir / "mock"),
                              "--sim-latency-ms", "0"], env=env)
    return procs, api, database_url, redis, pg


def prepare(api: OpsClient, servers: int) -> list[str]:
    wait_until(lambda: len(api.get("/ops/servers")) >= servers, timeout=120, interval=0.5,
               message=f"{servers} servers to register")
    uuids = [s["uuid"] for s in api.get("/ops/servers")]
    for server_uuid in uuids:
        api.put(f"/ops/servers/{server_uuid}", {"setup": True})
    api.post("/ops/accounts", {"login": "bench", "email": "bench@example.com"})
    api.post("/ops/packages", {"name": "g1-512m", "memory": 512, "disk": 5120})
    api.post("/ops/images", {"name": "base-64", "version": "24.4.1", "os": "smartos"})
    return uuids


class PerThread(threading.local):
    """One API client (one requests.Session, which is not for sharing) per client thread."""

    def __init__(self, api: OpsClient) -> None:
        self.api = OpsClient(api.base_url, api.token, api.timeout, api.throttled_wait)


def baseline_rate(api: OpsClient, server_uuid: str, clients: int, requests: int) -> float:
    mine = PerThread(api)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda _: mine.api.get(f"/ops/servers/{server_uuid}"), range(requests)))
    return requests / (time.perf_counter() - start)


def provision_all(api: OpsClient, first: int, count: int, clients: int,
                  rate: float | None) -> tuple[dict[str, tuple[float, float]], int]:
    """POST ``count`` provisions, as fast as the API takes them or, with ``rate``, at that
    many per second. A client told to wait (429) waits the Retry-After and asks again.
    Returns job uuid -> (wall-clock time of its first POST, of the POST that was accepted),
    and how many POSTs were throttled."""
    begin = time.time()
    throttled: list[int] = []
    mine = PerThread(api)

    def one(i: int) -> tuple[str, tuple[float, float]]:
        if rate:
            time.sleep(max(0.0, begin + i / rate - time.time()))
        first_try = time.time()
        while True:
            started = time.time()
            try:
                machine = mine.api.post("/ops/machines", {
                    "owner": "bench", "package": "g1-512m", "image": "base-64",
                    "alias": f"bench-{first + i}"})
                return machine["job_uuid"], (first_try, started)
            except ApiError as exc:
                if exc.status != 429:
                    raise
                throttled.append(1)
                time.sleep(exc.retry_after or 1.0)

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return dict(pool.map(one, range(count))), len(throttled)


def finished_jobs(engine: Any) -> dict[str, tuple[str, float]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT uuid, execution, extract(epoch from finished_at) FROM jobs "
            "WHERE execution IN ('succeeded', 'failed')")).all()
    return {r[0]: (r[1], float(r[2])) for r in rows}


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def phases(engine: Any, job_uuids: set[str]) -> dict[str, list[float]]:
    """Where each provision spent its time, from its job record: waiting for the workflow
    worker, for the node to take the batch (until it starts creating the machine), and for
    the worker to take the node's reply (from then on: the sim creates in no time)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT uuid, extract(epoch from created_at), chain_results FROM jobs "
            "WHERE name = 'provision'")).all()
    out: dict[str, list[float]] = {"worker queue": [], "node queue": [], "reply queue": []}
    for job_uuid, created, steps in rows:
        if job_uuid not in job_uuids or len(steps) < 3:
            continue
        by_name = {s["name"]: s for s in steps}
        picked = _epoch(by_name["validate"]["started_at"])
        sent = _epoch(by_name["ensure_image"]["started_at"])
        creating = _epoch(by_name["create_machine"]["started_at"])  # the node's clock
        replied = _epoch(by_name["create_machine"]["finished_at"])
        out["worker queue"].append(picked - float(created))
        out["node queue"].append(creating - sent)
        out["reply queue"].append(replied - creating)
    return out


def run_round(label: str, api: OpsClient, engine: Any, args: argparse.Namespace,
              first: int, rate: float | None, cpu_pids: dict[str, int]) -> bool:
    cpu_before = {name: cpu_seconds(pid) for name, pid in cpu_pids.items()}
    # The processes above are this one's children: count only its own threads for it.
    cpu_before["bench client"] = cpu_seconds(os.getpid(), tree=False)
    t0 = time.time()
    posted, throttled = provision_all(api, first, args.provisions, args.clients, rate)
    post_done = time.time()
    done = wait_until(lambda: (lambda f: f if set(posted) <= set(f) else None)(
        finished_jobs(engine)), timeout=600, interval=0.25, message="every job to finish")
    cpu_after = {name: cpu_seconds(pid) for name, pid in cpu_pids.items()}
    cpu_after["bench client"] = cpu_seconds(os.getpid(), tree=False)

    n = len(posted)
    latencies = [done[j][1] - accepted for j, (_, accepted) in posted.items()]
    waits = [done[j][1] - first_try for j, (first_try, _) in posted.items()]
    failed = sum(1 for j in posted if done[j][0] != "succeeded")
    last = max(done[j][1] for j in posted)
    per = {name: (cpu_after[name] - cpu_before[name]) / n * 1000 for name in cpu_after}
    head = sum(per[name] for name in HEADNODE_PROCS)
    print(f"\n{label}: {n} provisions")
    print(f"  POSTs accepted: {n / (post_done - t0):.1f}/s; answered 429 (throttled, "
          f"asked again after Retry-After): {throttled}")
    print(f"  throughput: {n / (last - t0):.1f} provisions/s (first POST to last running: "
          f"{last - t0:.1f} s); failed: {failed}")
    print(f"  latency POST->running: p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")
    print(f"  latency first POST->running (with waits at the door): p50 "
          f"{statistics.median(waits) * 1000:.0f} ms, p99 {percentile(waits, 0.99) * 1000:.0f}"
          f" ms")
    print("  where the time went (p50 / p99 ms): " + "; ".join(
        f"{name} {statistics.median(v) * 1000:.0f} / {percentile(v, 0.99) * 1000:.0f}"
        for name, v in phases(engine, set(posted)).items() if v))
    print(f"  head-node CPU per provision: {head:.1f} ms ("
          + ", ".join(f"{k} {per[k]:.1f} ms" for k in HEADNODE_PROCS) + ")")
    print("  other CPU per provision: "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in per.items() if k not in HEADNODE_PROCS))
    return failed == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--provisions", type=int, default=500, help="per round")
    parser.add_argument("--clients", type=int, default=16, help="concurrent API clients")
    parser.add_argument("--rate", type=float, default=40.0,
                        help="offered load (provisions/s) of the second round; 0 skips it")
    parser.add_argument("--api-workers", type=int, default=2)
    parser.add_argument("--worker-concurrency", type=int, default=0,
                        help="0: the setting's default")
    parser.add_argument("--worker-loglevel", default="WARNING")
    parser.add_argument("--env", action="append", default=[], metavar="SDC_X=VALUE",
                        help="a setting for every process of the cloud (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument("--signing", choices=["both", "on", "off"], default="both",
                        help="signed messages, unsigned, or both (each on a fresh cloud)")
    args = parser.parse_args()

    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.signing]
    ok = True
    for signed in modes:
        print(f"\n=== messages {'signed' if signed else 'NOT signed (to measure the cost)'} ===")
        ok &= bench_cloud(args, signed)
    return 0 if ok else 1


def bench_cloud(args: argparse.Namespace, signed: bool) -> bool:
    workdir = Path(tempfile.mkdtemp(prefix="sdc-bench-"))
    procs, api, database_url, redis, pg = start_cloud(args, workdir, signed)
    keep = args.keep
    try:
        uuids = prepare(api, args.servers)
        base = baseline_rate(api, uuids[0], args.clients, 1000)
        engine = create_engine(database_url)
        cpu_pids = {name: procs.procs[name].pid for name in HEADNODE_PROCS}
        cpu_pids.update({"mockcloud": procs.procs["mockcloud"].pid, "redis": redis.pid,
                         "postgresql": pg.postmaster_pid()})
        print(f"fleet: {args.servers} sim servers (latency 0); {args.clients} API clients; "
              f"API workers {args.api_workers}; workflow worker concurrency "
              f"{args.worker_concurrency or 'default'}; {psutil.cpu_count()} CPUs")
        print(f"baseline: authenticated GET /ops/servers/<uuid>: {base:.0f} requests/s")
        ok = run_round("as fast as the API takes them", api, engine, args, 0, None, cpu_pids)
        if args.rate and signed:
            ok &= run_round(f"offered at {args.rate:g}/s", api, engine, args,
                            args.provisions, args.rate, cpu_pids)
        engine.dispose()
        keep |= not ok
        return ok
    except BaseException:
        keep = True  # what went wrong is in the processes' logs
        raise
    finally:
        procs.stop_all()
        redis.stop()
        pg.stop()
        if keep:
            print(f"logs kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
