"""One agent per node: an exclusive lock per served server, on a file in the agent's data dir.

Two agents serving one server each keep their own view of the node, and their status reports
contradict each other (one of them marked 30 running machines gone). So an agent takes
``DATA_DIR/locks/<server_uuid>.lock`` with ``flock`` before it starts its worker, and hands the
open file to its worker child: the lock is held while either of them lives, so a new agent
cannot start while an orphaned worker of an old one still serves the node. The kernel drops
the lock when the last holder dies, however it dies: there is no stale lock to clean up.

The file names the processes that hold it, so the refusal can say whom to stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas.settings import SettingsError

#: the descriptors of the locks a supervised worker inherited, comma-separated
LOCK_FDS_ENV = "SDC_NODE_LOCK_FDS"
#: descriptors left for everything else a worker opens (Redis, backends, logs)
SPARE_FDS = 256


class NodeLocked(SettingsError):
    """Another agent serves this server now."""


@dataclass(frozen=True)
class NodeLock:
    server_uuid: str
    path: Path
    fd: int


def lock_path(data_dir: Path, server_uuid: str) -> Path:
    return data_dir / "locks" / f"{server_uuid}.lock"


def acquire(data_dir: Path, server_uuids: Sequence[str]) -> list[NodeLock]:
    """Lock every server of ``server_uuids`` for this process, or none: :class:`NodeLocked`
    names the first one another agent holds."""
    _make_room(len(server_uuids))
    taken: list[NodeLock] = []
    try:
        for server_uuid in server_uuids:
            taken.append(_take(lock_path(data_dir, server_uuid), server_uuid))
    except BaseException:
        release(taken)
        raise
    record_holders(taken, {"agent": os.getpid()})
    return taken


def release(locks: Iterable[NodeLock]) -> None:
    for lock in locks:
        with contextlib.suppress(OSError):
            os.close(lock.fd)


def record_holders(locks: Iterable[NodeLock], holders: dict[str, int]) -> None:
    """Write who holds the locks (``role pid`` lines), for the error a second agent shows."""
    text = "".join(f"{role} {pid}\n" for role, pid in holders.items()).encode()
    for lock in locks:
        os.ftruncate(lock.fd, 0)
        os.pwrite(lock.fd, text, 0)


def describe_holders(path: Path) -> str:
    """``pid 12 (agent), pid 13 (worker)``: the live processes named in a lock file."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        lines = []
    live = []
    for line in lines:
        role, _, pid = line.partition(" ")
        if pid.strip().isdigit() and _alive(int(pid)):
            live.append(f"pid {int(pid)} ({role})")
    return ", ".join(live) or "a process that did not say its pid"


def inherited_fds(environ: dict[str, str] | None = None) -> list[int] | None:
    """The lock descriptors this worker got from its supervisor, or None if it got none."""
    value = (os.environ if environ is None else environ).get(LOCK_FDS_ENV)
    if value is None:
        return None
    return [int(fd) for fd in value.split(",") if fd]


def _take(path: Path, server_uuid: str) -> NodeLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeLocked(
            f"server {server_uuid} is already served by another agent: its lock {path} is "
            f"held by {describe_holders(path)}; stop that agent first"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    return NodeLock(server_uuid, path, fd)


def _make_room(count: int) -> None:
    """A mock cloud of hundreds of nodes holds hundreds of lock files open: raise the soft
    limit of open files towards the hard one when the default would not do."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def _alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no Linux /proc (SmartOS): signal 0 is all we know
    return stat.rpartition(")")[2].split()[0] != "Z"
