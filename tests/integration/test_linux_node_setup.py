"""A Linux compute node brought in over SSH: `sdc server setup --backend linux --pool POOL`
against a real sshd whose node has a btrfs pool on a loop device, checked for btrfs and runc,
its agent installed from a wheel of this checkout and started supervised; then a busybox
machine provisioned onto it runs as a real runc container in that pool.

The sim-backend nodes of test_node_setup.py cover the rest of setup (second run, upgrade,
rollback, refusals); this one shows the linux backend set up the same way works for real.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from headnode.ssh.keys import head_key, public_line
from tests.support.btrfs import LoopPool, create_pool, destroy_pool, missing_host
from tests.support.procs import ProcessGroup
from tests.support.sshd import Sshd, start_sshd

MISSING = missing_host()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
              pytest.mark.timeout(600)]

from agents.backends.host import runc  # noqa: E402
from tests.support.linux_cloud import LinuxCloud, start_cloud  # noqa: E402

SDC = str(Path(sys.executable).parent / "sdc")
SMALL: dict[str, Any] = {"name": "lx-small", "memory": 128, "disk": 48}
#: the agent's runc state directory when setup gives it none (a real node's)
RUNC_ROOT = Path("/run/sdc-runc")


class Node:
    def __init__(self, workdir: Path, pool: LoopPool, sshd: Sshd) -> None:
        self.prefix = workdir / "node-root"
        self.pool = pool
        self.sshd = sshd

    def stop_agent(self) -> None:
        pidfile = self.prefix / "var/lib/sdc/agent.pid"
        with contextlib.suppress(OSError, ValueError):
            os.killpg(int(pidfile.read_text().split()[0]), signal.SIGTERM)


@pytest.fixture(scope="module")
def cloud(postgres_server: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory,
          bundle_dir: Path) -> Iterator[LinuxCloud]:
    workdir = tmp_path_factory.mktemp("linux-setup")
    made = start_cloud(postgres_server, redis_server, workdir, LinuxCloud,
                       SDC_AGENT_BUNDLE_DIR=str(bundle_dir))
    try:
        made.seed([SMALL])
        yield made
    except BaseException:
        print(made.procs.tails())
        raise
    finally:
        made.stop()


@pytest.fixture(scope="module")
def node(cloud: LinuxCloud) -> Iterator[Node]:
    line = public_line(head_key(cloud.data_dir))
    procs = ProcessGroup(cloud.workdir / "sshd-logs")
    pool = create_pool("ssh-setup")
    made = Node(cloud.workdir, pool, start_sshd(procs, cloud.workdir, "lx-node", [line]))
    try:
        yield made
    except BaseException:
        print(procs.tails())
        raise
    finally:
        made.stop_agent()
        procs.stop_all()
        destroy_pool(pool)


def setup(cloud: LinuxCloud, node: Node, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SDC, "server", "setup", "127.0.0.1", "--port", str(node.sshd.port), "--user",
         node.sshd.user, "--prefix", str(node.prefix), "--backend", "linux", *extra],
        env={**os.environ, **cloud.env}, text=True, capture_output=True, timeout=540,
        check=False)


def test_a_linux_node_without_its_pool_is_told_what_is_missing(
        cloud: LinuxCloud, node: Node) -> None:
    result = setup(cloud, node, "--pool", str(cloud.workdir / "no-such-pool"),
                   "--accept-new-host-key")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert "inspect" in text and "no-such-pool" in text, text
    assert not (node.prefix / "opt").exists()


def test_setup_then_a_machine_runs_in_a_runc_container_on_the_pool(
        cloud: LinuxCloud, node: Node) -> None:
    result = setup(cloud, node, "--pool", str(node.pool.mount), "--accept-new-host-key")
    assert result.returncode == 0, result.stdout + result.stderr
    (server,) = [s for s in cloud.api.get("/ops/servers") if s.get("setup")]
    assert server["backend"] == "linux" and server["status"] == "running", server
    machine = cloud.provision("lx-web", SMALL["name"], server_uuid=server["uuid"])
    try:
        assert machine["state"] == "running" and machine["server_uuid"] == server["uuid"]
        state = runc.state(RUNC_ROOT, machine["uuid"])
        assert state is not None and state["status"] == "running", state
        assert (node.pool.mount / "zones" / machine["uuid"]).is_dir()
    finally:
        cloud.succeed(cloud.api.delete(f"/ops/machines/{machine['uuid']}"))
    assert runc.state(RUNC_ROOT, machine["uuid"]) is None
