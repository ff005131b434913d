"""One agent per server (agents/nodelock.py): the lock a second agent cannot take."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents import nodelock

A = "11111111-1111-4111-8111-111111111111"
B = "22222222-2222-4222-8222-222222222222"


def test_a_held_server_is_refused_naming_the_holder(tmp_path: Path) -> None:
    held = nodelock.acquire(tmp_path, [A])
    try:
        with pytest.raises(nodelock.NodeLocked) as refused:
            nodelock.acquire(tmp_path, [A])
        message = str(refused.value)
        assert A in message and f"pid {os.getpid()} (agent)" in message
        assert str(nodelock.lock_path(tmp_path, A)) in message
    finally:
        nodelock.release(held)
    nodelock.release(nodelock.acquire(tmp_path, [A]))  # free again once released


def test_all_or_nothing_when_one_server_of_many_is_held(tmp_path: Path) -> None:
    held = nodelock.acquire(tmp_path, [B])
    try:
        with pytest.raises(nodelock.NodeLocked, match=B):
            nodelock.acquire(tmp_path, [A, B])
        nodelock.release(nodelock.acquire(tmp_path, [A]))  # A was not left locked
    finally:
        nodelock.release(held)


def test_the_lock_lives_as_long_as_any_process_holding_it(tmp_path: Path) -> None:
    """The supervisor hands its lock to its child: after the supervisor lets go, the child
    still holds it, and the holders' names say who."""
    locks = nodelock.acquire(tmp_path, [A])
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, pass_fds=[locks[0].fd])
    try:
        nodelock.record_holders(locks, {"agent": os.getpid(), "worker": child.pid})
        nodelock.release(locks)
        with pytest.raises(nodelock.NodeLocked, match=f"pid {child.pid} \\(worker\\)"):
            nodelock.acquire(tmp_path, [A])
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=10)
    nodelock.release(nodelock.acquire(tmp_path, [A]))


def test_dead_pids_in_the_file_are_not_named(tmp_path: Path) -> None:
    path = nodelock.lock_path(tmp_path, A)
    path.parent.mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path.write_text(f"agent {done.stdout.strip()}\nworker {os.getpid()}\n")
    assert nodelock.describe_holders(path) == f"pid {os.getpid()} (worker)"


def test_inherited_fds_come_from_the_environment() -> None:
    assert nodelock.inherited_fds({}) is None
    assert nodelock.inherited_fds({nodelock.LOCK_FDS_ENV: "3,4"}) == [3, 4]


def test_a_big_mock_cloud_gets_room_for_its_locks(tmp_path: Path) -> None:
    """Hundreds of simulated servers mean hundreds of open lock files: a low soft limit of
    open files is raised (within the hard one) rather than failing with EMFILE."""
    code = ("import resource, sys, uuid; from pathlib import Path; from agents import nodelock; "
            "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)); "
            "uuids = [str(uuid.uuid4()) for _ in range(300)]; "
            f"locks = nodelock.acquire(Path({str(tmp_path)!r}), uuids); print(len(locks))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "300"
