"""The machines' containers: one runc container per machine (container id = machine uuid),
its state under ``runc_root``.

runc is the truth about a machine's state: running while its container runs, else stopped,
so a new agent on the same node rediscovers every machine's true state (a container whose
process died is stopped). Status reports come every 0.5 s, and ``runc list`` is a Go binary
start (~20 ms): its answer is cached until an operation, ``ttl`` seconds, or the moment a
running container's init is gone (checked in /proc, which costs microseconds).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.backends.host import runc
from agents.backends.host.cmd import HostCommandError

RUNNING_STATUSES = ("running", "paused", "pausing", "created", "creating")


class Runtime:
    def __init__(self, root: Path, *, stop_timeout: float, ttl: float) -> None:
        self.root = root
        self.stop_timeout = stop_timeout
        self.ttl = ttl
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, Any]] = {}
        self._cached_at = -math.inf

    def state(self, uuid: str) -> dict[str, Any] | None:
        return runc.state(self.root, uuid)

    def is_running(self, uuid: str) -> bool:
        return running(self.state(uuid))

    def run(self, uuid: str, bundle: Path) -> None:
        """``runc run --detach`` of the bundle, its output to the bundle's console.log."""
        # runc keeps a container's state in <root>/<id>/: no directory, nothing to clean up
        # (saves a runc start on every create)
        if (self.root / uuid).exists() and self.state(uuid) is not None:
            runc.delete(self.root, uuid, force=True)  # a dead container of a past boot
        try:
            runc.run_detached(self.root, bundle, uuid, bundle / "console.log")
        finally:
            self.invalidate()

    def halt(self, uuid: str, stop_signal: str = "SIGTERM",
             stop_timeout: float | None = None) -> None:
        """``stop_signal`` to the machine's init, then SIGKILL once ``stop_timeout`` (None:
        the node's) has passed without its own shutdown; then forget the container. A
        container whose init has exited by itself is only forgotten."""
        state = self.state(uuid)
        if state is None:
            return
        if state["status"] in RUNNING_STATUSES:
            with contextlib.suppress(HostCommandError):  # it may have just exited
                runc.kill(self.root, uuid, signal_number(stop_signal))
            timeout = self.stop_timeout if stop_timeout is None else stop_timeout
            if not self._wait_stopped(uuid, timeout):
                with contextlib.suppress(HostCommandError):
                    runc.kill(self.root, uuid, "KILL")
                self._wait_stopped(uuid, 10.0)
        runc.delete(self.root, uuid, force=True)
        self.invalidate()

    def remove(self, uuid: str) -> None:
        """The container goes at once, whatever it was doing (destroy)."""
        if self.state(uuid) is not None:
            runc.delete(self.root, uuid, force=True)
        self.invalidate()

    def containers(self) -> dict[str, dict[str, Any]]:
        """``runc list`` by container id, cached (see the module's docstring)."""
        with self._lock:
            cached, at = self._cache, self._cached_at
        fresh = time.monotonic() - at < self.ttl
        if fresh and all(_same_process(c) for c in cached.values()
                         if c["status"] in RUNNING_STATUSES):
            return cached
        containers = {c["id"]: {**c, "starttime": _process_start(c.get("pid") or 0)}
                      for c in runc.list_containers(self.root)}
        with self._lock:
            self._cache, self._cached_at = containers, time.monotonic()
        return containers

    def invalidate(self) -> None:
        with self._lock:
            self._cached_at = -math.inf

    def _wait_stopped(self, uuid: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(uuid)
            if state is None or state["status"] == "stopped":
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def signal_number(name: str) -> str:
    """runc kill's argument for a signal name (``SIGTERM``, ``SIGRTMIN+3``): its number, as
    runc 1.1 knows no ``SIGRTMIN+n`` by name."""
    base, plus, offset = name.partition("+")
    return str(signal.Signals[base].value + (int(offset) if plus else 0))


def running(container: dict[str, Any] | None) -> bool:
    return container is not None and container["status"] in RUNNING_STATUSES


def boot_time(container: dict[str, Any] | None) -> float | None:
    if not running(container):
        return None
    assert container is not None
    # runc's RFC 3339 time with nanoseconds: 3.11's fromisoformat takes it (to the µs)
    return datetime.fromisoformat(container["created"]).timestamp()


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), None if it is gone or
    a zombie (a pid alone could have been reused by another process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _same_process(container: dict[str, Any]) -> bool:
    start = container.get("starttime")
    return start is not None and _process_start(container.get("pid") or 0) == start


def netns_dir(runc_root: Path) -> Path:
    """Where the machines' network namespaces are kept: beside runc's state, on the same
    tmpfs in production (gone after a node reboot, as the namespaces are)."""
    return runc_root.with_name(f"{runc_root.name}-netns")
