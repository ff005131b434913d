"""A real btrfs pool on a loop device for tests, shared by the agent's unit tests and the
head node + Linux agent integration tests.

Pools live under :data:`POOLS_DIR` in a directory named after the owning pytest pid, so a run
killed with SIGKILL leaves something :func:`reap_stale_pools` can find and remove (containers,
mount, loop device, file) at the start of the next run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from agents import pool as loop_pool
from tests.support.procs import pid_alive

POOLS_DIR = Path("/var/tmp/sdc-test-pools")
DEFAULT_SIZE = 2 << 30


@dataclass(frozen=True)
class LoopPool:
    workdir: Path
    image: Path
    device: str
    mount: Path
    runc_root: Path


def missing_host() -> str | None:
    """Why this machine cannot run a real pool and containers, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (loop devices, btrfs, runc)"
    for tool in ("losetup", "mkfs.btrfs", "btrfs", "runc", "tar"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make deps installs it)"
    if not Path("/bin/busybox").exists():
        return "/bin/busybox is missing (busybox-static)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    return None


def create_pool(name: str = "pool", size: int = DEFAULT_SIZE) -> LoopPool:
    reap_stale_pools()
    workdir = POOLS_DIR / f"{os.getpid()}-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    image, mount = workdir / "pool.img", workdir / "mnt"
    device = loop_pool.create(image, size, mount)
    return LoopPool(workdir, image, device, mount, workdir / "runc")


def destroy_pool(pool: LoopPool) -> None:
    loop_pool.destroy(pool.image, pool.mount, pool.runc_root)
    shutil.rmtree(pool.workdir, ignore_errors=True)


def reap_stale_pools() -> None:
    """Remove pools whose pytest process is gone."""
    if not POOLS_DIR.exists():
        return
    for workdir in POOLS_DIR.iterdir():
        pid = workdir.name.split("-", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        with contextlib.suppress(Exception):
            loop_pool.destroy(workdir / "pool.img", workdir / "mnt", workdir / "runc")
            shutil.rmtree(workdir, ignore_errors=True)


