"""The children of ``sdc up``: each runs in its own session and process group, logging to
``<log dir>/<name>.log``; the supervisor stops them in reverse start order (SIGTERM, then
SIGKILL for what is left), and a child that dies while it should run is noticed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

STOP_TIMEOUT = 10.0
START_TIMEOUT = 60.0
LOG_TAIL_LINES = 25


class ShutdownRequested(Exception):
    """Ctrl-C or SIGTERM: stop everything and exit 0."""


class ChildDied(Exception):
    """A child exited while it should be running: stop everything and exit 1."""

    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited with status {child.proc.returncode}")
        self.child = child


class StartupFailed(Exception):
    """The cloud did not come up (a timeout, a failed migration, a refused request)."""


# ---------------------------------------------------------------------------- supervisor


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]

    @property
    def pgid(self) -> int:
        # start_new_session makes the child the leader of its own group: pgid == pid.
        return self.proc.pid

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail_file(self.log_path, lines)


def tail_file(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def group_alive(pgid: int) -> bool:
    """Whether any process is left in the group (the leader may be gone, its children not)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process we cannot signal is not one we started
        return False
    return True


def signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@dataclass
class Supervisor:
    """Starts children, each in its own session and process group, and stops them all."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: list[str], without: tuple[str, ...] = ()) -> Child:
        """Start ``argv`` in the background; ``without`` names variables it must not get."""
        env = {key: value for key, value in self.env.items() if key not in without}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            # A new session per child: the terminal's Ctrl-C reaches only us, and we stop
            # the children in order instead of all at once.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        child = Child(name, argv, log_path, proc)
        self.children.append(child)
        return child

    def run_once(self, name: str, argv: list[str], timeout: float = 120.0) -> None:
        """Run a one-shot step (the migration) to completion, logging like the others."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=self.env, timeout=timeout,
                                    check=False)
        if result.returncode != 0:
            raise StartupFailed(f"{name} failed (status {result.returncode}):\n"
                                f"{tail_file(log_path)}")

    def dead_child(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def check(self) -> None:
        dead = self.dead_child()
        if dead is not None:
            raise ChildDied(dead)

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[str]:
        """SIGTERM every group in reverse start order, wait, SIGKILL what is left.

        Returns the names of the children that had to be killed.
        """
        for child in reversed(self.children):
            signal_group(child.pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive():
            time.sleep(0.05)
        # Only groups still alive: a finished group's id may already belong to someone else.
        stubborn = [c for c in reversed(self.children) if group_alive(c.pgid)]
        for child in stubborn:
            signal_group(child.pgid, signal.SIGKILL)
        killed = [c.name for c in stubborn]
        for child in self.children:
            try:
                child.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                killed.append(child.name)
        return killed

    def _alive(self) -> bool:
        alive = False
        for child in self.children:
            child.proc.poll()  # reap the leader so it stops counting as a group member
            alive = group_alive(child.pgid) or alive
        return alive


@contextmanager
def shutdown_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ShutdownRequested while the cloud runs."""

    def request(signum: int, _frame: FrameType | None) -> None:
        # Only the first signal interrupts; a second Ctrl-C during the shutdown must not
        # abandon children half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise ShutdownRequested(signal.Signals(signum).name)

    previous = {s: signal.signal(s, request) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def wait_for(what: str, ready: Callable[[], Any], supervisor: Supervisor,
             timeout: float = START_TIMEOUT, interval: float = 0.2,
             progress: Callable[[], Any] | None = None) -> Any:
    """Poll ``ready`` until it returns something true, watching the children meanwhile.
    With ``progress``, ``timeout`` counts from the last change of its value: a large fleet
    still registering is waited for as long as it keeps coming."""
    deadline = time.monotonic() + timeout
    seen = progress() if progress is not None else None
    while True:
        supervisor.check()
        value = ready()
        if value:
            return value
        if progress is not None and (now := progress()) != seen:
            seen, deadline = now, time.monotonic() + timeout
        if time.monotonic() > deadline:
            still = f" (stuck at {seen})" if progress is not None else ""
            raise StartupFailed(f"{what}: not ready after {timeout:g} s{still}")
        time.sleep(interval)
