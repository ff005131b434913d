"""What the Linux benchmarks share: a head node as in production (a private PostgreSQL and
redis-server, the API under gunicorn, the workflow worker, beat) and one real Linux node
(`sdc agent run --backend linux` on a btrfs pool on a loop device, its node network in a
namespace made here), set up, with the account ``bench``, a package and a network; and the
jobs' rows read straight from the database (polling the API would add its own latency)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

from headnode.cli.client import OpsClient
from headnode.store.migrate import upgrade
from tests.support import credentials, netns
from tests.support.btrfs import LoopPool, create_pool, destroy_pool
from tests.support.headnode_env import headnode_env
from tests.support.net import free_port
from tests.support.procs import ProcessGroup
from tests.support.services import PostgresServer, RedisServer, postgres_bin_dir
from tests.support.wait import wait_until

SDC = str(Path(sys.executable).parent / "sdc")
TOKEN = "bench-token"
ACCOUNT = "bench"


@dataclass
class BenchNode:
    api: OpsClient
    engine: Engine
    env: dict[str, str]
    pool: LoopPool
    node_netns: Path
    workdir: Path


def start_headnode(workdir: Path, pg: PostgresServer, redis: RedisServer,
                   procs: ProcessGroup) -> tuple[OpsClient, str, dict[str, str]]:
    database_url = pg.create_database("sdc_bench_linux")
    upgrade(database_url)
    port = free_port()
    env = headnode_env(database_url, redis.url, workdir / "headnode", TOKEN, port)
    api = OpsClient(f"http://127.0.0.1:{port}", TOKEN, timeout=60)
    procs.spawn("api", [SDC, "headnode", "serve"], env=env, ready=api.ping, timeout=60)
    procs.spawn("worker", [SDC, "headnode", "worker", "--loglevel", "WARNING"], env=env)
    procs.spawn("beat", [SDC, "headnode", "beat", "--loglevel", "WARNING"], env=env)
    return api, database_url, env


def start_agent(node: BenchNode, procs: ProcessGroup, name: str) -> str:
    """The node's agent, registered and set up; its server uuid."""
    server = str(uuid.uuid4())
    credentials.issue(node.workdir / "agent", [server])
    procs.spawn("agent", [SDC, "agent", "run", "--backend", "linux", "--server-uuid", server,
                          "--hostname", name, "--data-dir", str(node.workdir / "agent")],
                env={**node.env, "SDC_POOL": str(node.pool.mount),
                     "SDC_RUNC_ROOT": str(node.pool.runc_root),
                     "SDC_NODE_NETNS": str(node.node_netns), "SDC_NIC_TAGS": "external",
                     "SDC_IMAGE_STORE_URL": node.api.base_url})
    wait_until(lambda: any(s["uuid"] == server for s in node.api.get("/ops/servers")),
               timeout=60, message="the linux node to register")
    node.api.put(f"/ops/servers/{server}", {"setup": True})
    return server


@contextmanager
def linux_bench_node(name: str, pool_size: int, package: dict[str, Any],
                     network: dict[str, Any], keep: bool = False) -> Iterator[BenchNode]:
    """Everything up (see the module's docstring); everything gone on exit, the logs kept
    with ``keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sdc-bench-{name}-"))
    (workdir / "redis").mkdir()
    redis = RedisServer(shutil.which("redis-server") or "/usr/bin/redis-server",
                        workdir / "redis", free_port())
    pg_dir = Path(tempfile.mkdtemp(prefix="sdc-bench-pg-"))
    pg = PostgresServer(postgres_bin_dir(), pg_dir, free_port())
    procs = ProcessGroup(workdir / "logs")
    pool = create_pool(f"bench-{name}", size=pool_size)
    spaces = netns.workdir(f"bench-{name}")
    engine: Engine | None = None
    try:
        redis.start()
        pg.start()
        api, database_url, env = start_headnode(workdir, pg, redis, procs)
        engine = create_engine(database_url)
        node = BenchNode(api, engine, env, pool, netns.create(spaces / "node"), workdir)
        start_agent(node, procs, f"bench-{name}")
        api.post("/ops/accounts", {"login": ACCOUNT, "email": f"{ACCOUNT}@example.com"})
        api.post("/ops/packages", package)
        api.post("/ops/networks", network)
        yield node
    finally:
        if engine is not None:
            engine.dispose()
        procs.stop_all()
        destroy_pool(pool)
        netns.remove_workdir(spaces)
        redis.stop()
        pg.stop()
        shutil.rmtree(pg_dir, ignore_errors=True)
        if keep:
            print(f"logs kept in {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def job_row(engine: Any, job_uuid: str) -> tuple[str, float] | None:
    """(execution, finished at) of a job that has ended; None while it runs."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT execution, extract(epoch from finished_at) FROM jobs "
                                "WHERE uuid = :u"), {"u": job_uuid}).one_or_none()
    if row is None or row[0] not in ("succeeded", "failed"):
        return None
    return str(row[0]), float(row[1])


def destroy(api: OpsClient, engine: Any, job_uuid: str) -> None:
    """Destroy the machine of a provision job and wait, so every provision meets the same
    node (the floor, too, removes what it made after each round)."""
    machine_uuid = api.get(f"/ops/jobs/{job_uuid}")["machine_uuid"]
    answer = api.delete(f"/ops/machines/{machine_uuid}")
    wait_until(lambda: job_row(engine, answer["job_uuid"]), timeout=120, interval=0.05,
               message=f"destroy of {machine_uuid}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
