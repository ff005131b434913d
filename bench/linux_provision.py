"""Provisioning onto one real Linux node: POST -> running, beside the floor of the same work.

The whole head node runs as in production on this machine (PostgreSQL, Redis, the API under
gunicorn, the workflow worker, beat) with one `sdc agent run --backend linux` on a btrfs pool
on a loop device. The busybox image (`sdc image build-busybox`) is imported through the API
and fetched once by the node. Then N provisions, one at a time, each timed from the start of
its POST to its job's end (the machine is running: runc reports it so).

The floor is what the kernel must do anyway for one machine, measured in the same run and
interleaved with the provisions (this machine is shared and noisy): a btrfs snapshot of the
image plus `runc run --detach` of the same bundle the agent writes (bench/linux_floor.py).
Prints both, their ratio (target: p50 <= 5x the floor), and where a provision's time goes.

    .venv/bin/python bench/linux_provision.py [--provisions 20]     (as root)
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile  # noqa: E402
from bench.linux_floor import image_final_path, measure_floor  # noqa: E402
from headnode.cli.client import OpsClient  # noqa: E402
from headnode.imagebuild import build_busybox_image  # noqa: E402
from headnode.store.migrate import upgrade  # noqa: E402
from tests.support.btrfs import create_pool, destroy_pool, missing_host  # noqa: E402
from tests.support.net import free_port  # noqa: E402
from tests.support.procs import ProcessGroup  # noqa: E402
from tests.support.services import PostgresServer, RedisServer, postgres_bin_dir  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402

SDC = str(Path(sys.executable).parent / "sdc")
TOKEN = "bench-token"
PACKAGE: dict[str, Any] = {"name": "lx-256m", "memory": 256, "disk": 512}
POLL = 0.005


def start_headnode(workdir: Path, pg: PostgresServer, redis: RedisServer,
                   procs: ProcessGroup) -> tuple[OpsClient, str, dict[str, str]]:
    database_url = pg.create_database("sdc_bench_linux")
    upgrade(database_url)
    port = free_port()
    env = {"SDC_DATABASE_URL": database_url, "SDC_REDIS_URL": redis.url,
           "SDC_DATA_DIR": str(workdir / "headnode"), "SDC_OPERATOR_TOKEN": TOKEN,
           "SDC_API_BIND": f"127.0.0.1:{port}", "SDC_API_WORKERS": "2"}
    api = OpsClient(f"http://127.0.0.1:{port}", TOKEN, timeout=60)
    procs.spawn("api", [SDC, "headnode", "serve"], env=env, ready=api.ping, timeout=60)
    procs.spawn("worker", [SDC, "headnode", "worker", "--loglevel", "WARNING"], env=env)
    procs.spawn("beat", [SDC, "headnode", "beat", "--loglevel", "WARNING"], env=env)
    return api, database_url, env


def import_busybox(api: OpsClient, out: Path) -> str:
    built = build_busybox_image(out)
    created = api.post("/ops/images", built.manifest)
    with open(built.file_path, "rb") as fh:
        resp = api.session.put(api.url(f"/ops/images/{created['uuid']}/file"), data=fh,
                               headers={"Content-Type": "application/octet-stream"},
                               timeout=120)
    resp.raise_for_status()
    assert hashlib.sha256(built.file_path.read_bytes()).hexdigest() == \
        built.manifest["files"][0]["sha256"]
    return str(created["uuid"])


def job_row(engine: Any, job_uuid: str) -> tuple[str, float] | None:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT execution, extract(epoch from finished_at) FROM jobs "
                                "WHERE uuid = :u"), {"u": job_uuid}).one_or_none()
    if row is None or row[0] not in ("succeeded", "failed"):
        return None
    return str(row[0]), float(row[1])


def provision_once(api: OpsClient, engine: Any, image_uuid: str, i: int) -> tuple[float, str]:
    """Seconds from the start of the POST to the job's end (machine running); job uuid."""
    started = time.time()
    machine = api.post("/ops/machines", {"owner": "bench", "package": PACKAGE["name"],
                                         "image": image_uuid, "alias": f"lx-{i}"})
    row: tuple[str, float] | None = wait_until(lambda: job_row(engine, machine["job_uuid"]),
                                               timeout=300, interval=POLL,
                                               message=f"provision {i} to finish")
    assert row is not None
    execution, finished = row
    if execution != "succeeded":
        job = api.get(f"/ops/jobs/{machine['job_uuid']}")
        raise SystemExit(f"provision {i} failed: {job['error']}")
    return finished - started, str(machine["job_uuid"])


def destroy(api: OpsClient, engine: Any, job_uuid: str) -> None:
    """Destroy the machine of a provision job and wait, so every provision meets the same
    node (the floor, too, removes what it made after each round)."""
    machine_uuid = api.get(f"/ops/jobs/{job_uuid}")["machine_uuid"]
    answer = api.delete(f"/ops/machines/{machine_uuid}")
    wait_until(lambda: job_row(engine, answer["job_uuid"]), timeout=120, interval=0.05,
               message=f"destroy of {machine_uuid}")


def step_durations(api: OpsClient, job_uuids: list[str]) -> dict[str, float]:
    """Median seconds per step over the jobs, plus the queue wait before the first step."""
    per: dict[str, list[float]] = {}
    for job_uuid in job_uuids:
        job = api.get(f"/ops/jobs/{job_uuid}")
        created = datetime.fromisoformat(job["created_at"])
        first = datetime.fromisoformat(job["chain_results"][0]["started_at"])
        per.setdefault("(queued before validate)", []).append(
            (first - created).total_seconds())
        for entry in job["chain_results"]:
            took = (datetime.fromisoformat(entry["finished_at"])
                    - datetime.fromisoformat(entry["started_at"])).total_seconds()
            per.setdefault(entry["name"], []).append(took)
    return {name: statistics.median(values) for name, values in per.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--provisions", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args()
    missing = missing_host()
    if missing:
        print(f"linux_provision: cannot run here: {missing}", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="sdc-bench-linux-"))
    (workdir / "redis").mkdir()
    redis = RedisServer(shutil.which("redis-server") or "/usr/bin/redis-server",
                        workdir / "redis", free_port())
    pg_dir = Path(tempfile.mkdtemp(prefix="sdc-bench-pg-"))
    pg = PostgresServer(postgres_bin_dir(), pg_dir, free_port())
    procs = ProcessGroup(workdir / "logs")
    pool = create_pool("bench-linux", size=4 << 30)
    floor_runc = pool.workdir / "floor-runc"
    try:
        redis.start()
        pg.start()
        api, database_url, env = start_headnode(workdir, pg, redis, procs)
        server = str(uuid.uuid4())
        procs.spawn("agent", [SDC, "agent", "run", "--backend", "linux", "--server-uuid",
                              server, "--hostname", "bench-linux",
                              "--data-dir", str(workdir / "agent")],
                    env={**env, "SDC_POOL": str(pool.mount),
                         "SDC_RUNC_ROOT": str(pool.runc_root)})
        wait_until(lambda: any(s["uuid"] == server for s in api.get("/ops/servers")),
                   timeout=60, message="the linux node to register")
        api.put(f"/ops/servers/{server}", {"setup": True})
        api.post("/ops/accounts", {"login": "bench", "email": "bench@example.com"})
        api.post("/ops/packages", PACKAGE)
        image_uuid = import_busybox(api, workdir / "image")
        engine = create_engine(database_url)

        # The first provision also imports the image into the pool: shown, not counted.
        first, first_job = provision_once(api, engine, image_uuid, 0)
        destroy(api, engine, first_job)
        final = image_final_path(pool.mount, image_uuid)
        measure_floor(pool.mount, final, floor_runc, rounds=2,  # warm caches
                      ram_mb=PACKAGE["memory"], disk_mb=PACKAGE["disk"])
        latencies, floors, jobs = [], [], []
        for i in range(1, args.provisions + 1):
            floors += measure_floor(pool.mount, final, floor_runc, rounds=1,
                                    ram_mb=PACKAGE["memory"], disk_mb=PACKAGE["disk"])
            took, job_uuid = provision_once(api, engine, image_uuid, i)
            latencies.append(took)
            jobs.append(job_uuid)
            destroy(api, engine, job_uuid)
        engine.dispose()

        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        f50, f99 = statistics.median(floors), percentile(floors, 0.99)
        print(f"one Linux node (btrfs loop pool, runc), busybox image, package "
              f"{PACKAGE['memory']} MiB / {PACKAGE['disk']} MiB; provisions one at a time, "
              "each destroyed before the next")
        print(f"first provision (with the image import): {ms(first)}")
        print(f"POST -> running over {len(latencies)}: p50 {ms(p50)}, p99 {ms(p99)}, "
              f"max {ms(max(latencies))}")
        print(f"floor (btrfs snapshot + qgroup limit + runc run --detach) over {len(floors)}, "
              f"interleaved: p50 {ms(f50)}, p99 {ms(f99)}")
        print(f"ratio p50/floor p50: {p50 / f50:.2f}x (target <= 5x); "
              f"p99/floor p99: {p99 / f99:.2f}x")
        print("median per step: " + ", ".join(
            f"{name} {ms(v)}" for name, v in step_durations(api, jobs).items()))
        return 0 if p50 <= 5 * f50 else 1
    finally:
        procs.stop_all()
        destroy_pool(pool)
        redis.stop()
        pg.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        if args.keep:
            print(f"logs kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
