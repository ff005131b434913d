"""A whole cloud on real Linux nodes for end-to-end tests: the head node's processes (API under
gunicorn, worker, beat) on a private database and Redis, and one ``sdc agent run --backend
linux`` per node, each on its own btrfs pool (a loop device) and, when asked, with its node
network in a namespace the test made (``SDC_NODE_NETNS``).

Callers check :func:`tests.support.btrfs.missing_host` first: these drive btrfs and runc.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agents.backends.host import runc
from headnode.cli.client import OpsClient
from headnode.imagebuild import BuiltImage, build_busybox_image
from headnode.store.migrate import upgrade
from tests.support import credentials, netns
from tests.support.btrfs import DEFAULT_SIZE, LoopPool, create_pool, destroy_pool
from tests.support.headnode_env import headnode_env
from tests.support.net import free_port
from tests.support.procs import ProcessGroup
from tests.support.wait import wait_until

SDC = str(Path(sys.executable).parent / "sdc")
TOKEN = "linux-e2e-token"


@dataclass
class LinuxNode:
    name: str
    server: str
    pool: LoopPool
    #: the node's network namespace (None: the host's, as the single-node tests run)
    netns: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


class LinuxCloud:
    def __init__(self, workdir: Path, database_url: str, redis_url: str,
                 **settings: str) -> None:
        self.workdir = workdir
        port = free_port()
        self.data_dir = workdir / "headnode"
        self.env = {**headnode_env(database_url, redis_url, self.data_dir, TOKEN, port,
                                   SDC_RECONCILE_INTERVAL="2"), **settings}
        self.api = OpsClient(f"http://127.0.0.1:{port}", TOKEN, timeout=30)
        self.procs = ProcessGroup(workdir / "logs")
        self.nodes: list[LinuxNode] = []

    # -- bringing it up and down --------------------------------------------------------------

    def start_headnode(self) -> None:
        self.procs.spawn("api", [SDC, "headnode", "serve"], env=self.env, ready=self.api.ping,
                         timeout=60)
        self.procs.spawn("worker", [SDC, "headnode", "worker"], env=self.env)
        self.procs.spawn("beat", [SDC, "headnode", "beat"], env=self.env)

    def add_node(self, name: str, netns: Path | None = None,
                 env: dict[str, str] | None = None,
                 pool_size: int = DEFAULT_SIZE) -> LinuxNode:
        """A pool (of ``pool_size`` bytes), an agent, and the node registered and set up."""
        node = LinuxNode(name, str(uuid.uuid4()), create_pool(f"e2e-{name}", pool_size), netns)
        node.env = {**self.env, "SDC_POOL": str(node.pool.mount),
                    "SDC_RUNC_ROOT": str(node.pool.runc_root), "SDC_STOP_TIMEOUT": "3",
                    "SDC_IMAGE_STORE_URL": self.api.base_url,
                    **({"SDC_NODE_NETNS": str(netns)} if netns else {}), **(env or {})}
        self.nodes.append(node)
        self.start_agent(node)
        wait_until(lambda: any(s["uuid"] == node.server for s in self.api.get("/ops/servers")),
                   timeout=60, message=f"node {name} to register")
        self.api.put(f"/ops/servers/{node.server}", {"setup": True})
        return node

    def start_agent(self, node: LinuxNode) -> None:
        credentials.issue(self.workdir / f"agent-{node.name}", [node.server])
        self.procs.spawn(f"agent-{node.name}",
                         [SDC, "agent", "run", "--backend", "linux", "--server-uuid",
                          node.server, "--hostname", f"cn-{node.name}",
                          "--data-dir", str(self.workdir / f"agent-{node.name}")],
                         env=node.env)

    def stop(self) -> None:
        try:
            self.procs.stop_all()
        finally:
            for node in self.nodes:
                destroy_pool(node.pool)

    def seed(self, packages: list[dict[str, Any]]) -> dict[str, Any]:
        """alice, the packages, and the busybox image imported; returns the image."""
        self.api.post("/ops/accounts", {"login": "alice", "email": "alice@example.com"})
        for package in packages:
            self.api.post("/ops/packages", package)
        return self.import_image(build_busybox_image(self.workdir / "image"))

    def import_image(self, built: BuiltImage) -> dict[str, Any]:
        """``sdc image import`` of a built image; returns the image as the API shows it."""
        imported = self.sdc("--json", "image", "import", str(built.manifest_path),
                            str(built.file_path))
        assert imported.returncode == 0, imported.stderr
        image: dict[str, Any] = json.loads(imported.stdout)
        assert image["state"] == "active" and image["uuid"] == built.manifest["uuid"]
        return image

    # -- jobs -----------------------------------------------------------------------------------

    def wait_job(self, job_uuid: str, timeout: float = 120) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = dict(self.api.get(f"/ops/jobs/{job_uuid}"))
            return job if job["execution"] in ("succeeded", "failed", "canceled") else None

        job: dict[str, Any] | None = wait_until(finished, timeout=timeout, interval=0.1,
                                                message=f"job {job_uuid} to finish")
        assert job is not None
        return job

    def succeed(self, answer: dict[str, Any]) -> dict[str, Any]:
        job = self.wait_job(answer["job_uuid"])
        assert job["execution"] == "succeeded", (job["error"], job["chain_results"])
        return job

    def provision(self, alias: str, package: str, image: str = "busybox",
                  **extra: Any) -> dict[str, Any]:
        machine = self.api.post("/ops/machines", {"owner": "alice", "package": package,
                                                  "image": image, "alias": alias, **extra})
        self.succeed(machine)
        return dict(self.api.get(f"/ops/machines/{machine['uuid']}"))

    def act(self, machine_uuid: str, **query: str) -> dict[str, Any]:
        return self.succeed(self.api.post(f"/ops/machines/{machine_uuid}", params=query))

    def sdc(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SDC, *argv], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "SDC_API_URL": self.api.base_url,
                                   "SDC_OPERATOR_TOKEN": TOKEN}, check=False)

    # -- what a node's kernel says --------------------------------------------------------------

    def node_of(self, machine_uuid: str) -> LinuxNode:
        server = self.api.get(f"/ops/machines/{machine_uuid}")["server_uuid"]
        return next(n for n in self.nodes if n.server == server)

    def inside(self, machine_uuid: str, *argv: str) -> str:
        return runc.exec_(self.node_of(machine_uuid).pool.runc_root, machine_uuid, list(argv))

    def runc_state(self, machine_uuid: str, node: LinuxNode | None = None
                   ) -> dict[str, Any] | None:
        return runc.state((node or self.nodes[0]).pool.runc_root, machine_uuid)


CloudT = TypeVar("CloudT", bound=LinuxCloud)


@contextmanager
def cloud_with_namespaces(postgres_server: Any, redis_server: Any, workdir: Path,
                          kind: type[CloudT], spaces: Path,
                          **settings: str) -> Iterator[CloudT]:
    """:func:`start_cloud` (with ``settings``), for a module whose nodes live in the network
    namespaces under ``spaces`` (``tests.support.netns.workdir``): a setup that fails prints
    the processes' last log lines; on exit the cloud stops and the namespaces go."""
    try:
        cloud = start_cloud(postgres_server, redis_server, workdir, kind, **settings)
    except BaseException:
        netns.remove_workdir(spaces)
        raise
    try:
        yield cloud
    except BaseException:
        print(cloud.procs.tails())
        raise
    finally:
        try:
            cloud.stop()
        finally:
            netns.remove_workdir(spaces)


def start_cloud(postgres_server: Any, redis_server: Any, workdir: Path,
                kind: type[CloudT], **settings: str) -> CloudT:
    """The head node up on a new database and a flushed Redis (with ``settings``, SDC_*
    values, beside the test defaults); no node yet."""
    database_url = postgres_server.create_database(f"linux_{uuid.uuid4().hex[:8]}")
    upgrade(database_url)
    redis_server.flushall()
    cloud = kind(workdir, database_url, redis_server.url, **settings)
    try:
        cloud.start_headnode()
    except BaseException:
        cloud.stop()
        raise
    return cloud
