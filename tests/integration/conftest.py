"""A whole small cloud as real processes: API (gunicorn), workflow worker, beat, and three
sim agents, each its own process, on a database and a Redis of the test run's own.

One cloud per test module (starting it costs seconds); each module gets a fresh database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headnode.cli.client import OpsClient
from headnode.store.migrate import upgrade
from tests.support import credentials
from tests.support.headnode_env import headnode_env
from tests.support.net import free_port
from tests.support.procs import ProcessGroup
from tests.support.triton import triton_bin  # noqa: F401  (a fixture every module here may use)
from tests.support.wait import wait_until

SDC = str(Path(sys.executable).parent / "sdc")
TOKEN = "integration-token"
AGENT_COUNT = 3
#: sim nodes of 16 GiB RAM (13.6 GiB placeable) and 200 GiB pool
SIM_RAM_MB = 16384
SIM_DISK_GB = 200


def sdc(cloud: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `sdc` command against ``cloud`` as its operator."""
    env = {**os.environ, "SDC_API_URL": cloud.api.base_url, "SDC_OPERATOR_TOKEN": TOKEN}
    return subprocess.run([SDC, *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


class Cloud:
    def __init__(self, procs: ProcessGroup, env: dict[str, str], api: OpsClient,
                 redis_client: Any, workdir: Path) -> None:
        self.procs = procs
        self.env = env
        self.api = api
        self.redis = redis_client
        self.workdir = workdir
        self.agents: dict[str, str] = {}  # process name -> server uuid

    def start_agent(self, index: int, server_uuid: str | None = None) -> str:
        server_uuid = server_uuid or str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                    f"{self.workdir}/cn{index}"))
        name = f"agent{index}"
        credentials.issue(self.workdir / name, [server_uuid])
        self.procs.spawn(
            name,
            [SDC, "agent", "run", "--backend", "sim", "--server-uuid", server_uuid,
             "--hostname", f"cn{index}", "--data-dir", str(self.workdir / name),
             "--sim-ram-mb", str(SIM_RAM_MB), "--sim-disk-gb", str(SIM_DISK_GB)],
            env=self.env,
        )
        self.agents[name] = server_uuid
        return server_uuid

    def server(self, server_uuid: str) -> dict[str, Any]:
        return self.api.get(f"/ops/servers/{server_uuid}")

    def restart(self, name: str) -> None:
        """Start a stopped or killed process again, as it was started."""
        self.procs.restart(name)

    def wait_job(self, job_uuid: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(
            lambda: (lambda j: j if j["execution"] in ("succeeded", "failed") else None)(
                self.api.get(f"/ops/jobs/{job_uuid}")),
            timeout=timeout, interval=0.1, message=f"job {job_uuid} to finish",
        )

    def setup_all(self) -> list[str]:
        wanted = set(self.agents.values())
        wait_until(lambda: wanted <= {s["uuid"] for s in self.api.get("/ops/servers")},
                   timeout=30, message="every agent to register")
        for server_uuid in wanted:
            self.api.put(f"/ops/servers/{server_uuid}", {"setup": True})
        return sorted(wanted)

    def seed(self) -> dict[str, Any]:
        """An account, two packages and an image, as an operator would make them."""
        account = self.api.post("/ops/accounts", {"login": "alice", "email": "alice@example.com"})
        small = self.api.post("/ops/packages", {"name": "small", "memory": 1024, "disk": 10240})
        large = self.api.post("/ops/packages", {"name": "large", "memory": 4096, "disk": 40960})
        image = self.api.post("/ops/images", {"name": "base-64", "version": "24.4.1",
                                              "os": "smartos"})
        return {"account": account, "small": small, "large": large, "image": image}


@pytest.fixture(scope="module")
def cloud(postgres_server: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory,
          bundle_dir: Path, request: pytest.FixtureRequest) -> Iterator[Cloud]:
    """A module may set ``CLOUD_ENV = {...}`` to change its cloud's settings, and
    ``AGENT_COUNT = N`` to start another number of local sim agents."""
    workdir = tmp_path_factory.mktemp("cloud")
    database_url = postgres_server.create_database(f"cloud_{uuid.uuid4().hex[:8]}")
    upgrade(database_url)
    redis_server.flushall()
    port = free_port()
    env = headnode_env(database_url, redis_server.url, workdir / "headnode", TOKEN, port, **{
        # the agents' image store (sim nodes upload the images made from their machines)
        "SDC_IMAGE_STORE_URL": f"http://127.0.0.1:{port}",
        "SDC_AGENT_BUNDLE_DIR": str(bundle_dir),
        "SDC_RECONCILE_INTERVAL": "2",
        **getattr(request.module, "CLOUD_ENV", {}),
    })
    api = OpsClient(f"http://127.0.0.1:{port}", TOKEN, timeout=30)
    procs = ProcessGroup(workdir / "logs")
    try:
        procs.spawn("api", [SDC, "headnode", "serve"], env=env, ready=api.ping, timeout=60)
        procs.spawn("worker", [SDC, "headnode", "worker"], env=env)
        procs.spawn("beat", [SDC, "headnode", "beat"], env=env)
        c = Cloud(procs, env, api, redis_server.client(), workdir)
        for i in range(getattr(request.module, "AGENT_COUNT", AGENT_COUNT)):
            c.start_agent(i)
        c.setup_all()
        yield c
    except BaseException:
        print(procs.tails())
        raise
    finally:
        procs.stop_all()
