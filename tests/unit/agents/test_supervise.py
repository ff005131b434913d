"""``sdc agent supervise`` (a node without systemd) as real processes against a real Redis:
detached, it runs a real agent that heartbeats, starts it again when it is killed, refuses a
second supervisor, and on SIGTERM stops the agent with its whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.agent import HEARTBEAT_KEY
from tests.support import credentials
from tests.support.wait import wait_until

FAST = {"SDC_HEARTBEAT_INTERVAL": "0.2", "SDC_STATUS_CHECK_INTERVAL": "0.1",
        "SDC_SIM_STATE": "false"}


def running(pid: int) -> bool:
    """Alive and not a zombie (a detached supervisor's reaper may be slow to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _live_processes(field: int, value: int) -> list[int]:
    """Live processes whose /proc stat ``field`` (after the name: 1 ppid, 2 pgid) is
    ``value``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[field]) == value and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def children(pid: int) -> list[int]:
    return _live_processes(1, pid)


def group(pgid: int) -> list[int]:
    return _live_processes(2, pgid)


@pytest.fixture
def node(tmp_path: Path, clean_redis: str) -> Iterator[dict[str, Any]]:
    server_uuid = str(uuid.uuid4())
    data_dir = tmp_path / "var" / "lib" / "sdc"
    creds = credentials.issue(data_dir, [server_uuid])
    env_file = tmp_path / "agent.env"
    env = {"SDC_REDIS_URL": clean_redis, "SDC_SERVER_UUID": server_uuid,
           "SDC_BACKEND": "sim", "SDC_DATA_DIR": str(data_dir),
           "SDC_NODE_CREDENTIALS": str(creds), **FAST}
    env_file.write_text("# as setup writes it\n" + "".join(f"{k}={v}\n" for k, v in env.items()))
    pidfile = tmp_path / "agent.pid"
    yield {"uuid": server_uuid, "env_file": env_file, "pidfile": pidfile,
           "log": tmp_path / "log" / "sdc-agent.log"}
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.killpg(int(pidfile.read_text()), signal.SIGKILL)  # a failed test's leftovers


def supervise(node: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "agents.cli", "supervise", "--detach",
            "--pidfile", str(node["pidfile"]), "--log", str(node["log"]),
            "--env-file", str(node["env_file"])]
    # the agent's settings come from the env file alone: a stray one is not passed on
    env = {**os.environ, "SDC_SIM_RAM_MB": "not-a-number"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env,
                          check=False)


def test_supervise_restarts_the_agent_and_stops_with_its_group(
        node: dict[str, Any], redis_server: Any) -> None:
    client = redis_server.client()
    started = supervise(node)
    assert started.returncode == 0, started.stderr
    supervisor = int(node["pidfile"].read_text())
    assert running(supervisor) and os.getpgid(supervisor) == supervisor  # its own session
    wait_until(lambda: client.hget(HEARTBEAT_KEY, node["uuid"]), timeout=60,
               message=lambda: "a heartbeat; log:\n" + node["log"].read_text())
    (agent,) = children(supervisor)

    again = supervise(node)
    assert again.returncode == 1
    assert f"already running (pid {supervisor}" in again.stderr

    os.kill(agent, signal.SIGKILL)
    restarted = wait_until(lambda: [p for p in children(supervisor) if p != agent],
                           timeout=30, message="a new agent")[0]
    client.hdel(HEARTBEAT_KEY, node["uuid"])
    wait_until(lambda: client.hget(HEARTBEAT_KEY, node["uuid"]), timeout=60,
               message="a heartbeat of the restarted agent")
    members = wait_until(lambda: [p for p in group(restarted) if p != restarted],
                         timeout=30, message="the agent's worker in its group")

    os.kill(supervisor, signal.SIGTERM)
    wait_until(lambda: not running(supervisor), timeout=40, message="the supervisor gone")
    assert not [p for p in [restarted, *members] if running(p)]
    assert not node["pidfile"].exists()
    log = node["log"].read_text()
    assert "the agent exited with -9" in log and "starting it again in" in log
    assert "stopped" in log
