"""Start, watch and stop the real processes an integration test runs (API, workers, agents).

Each child gets its own session, hence its own process group, so stopping it also stops what
it forked (gunicorn and Celery prefork children) and a test never leaves orphans behind.
Output goes to a log file per process so a failing test can show what the process said.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ProcessStartError(AssertionError):
    """A process exited or never became ready; the message carries the tail of its log."""


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    log_path: Path
    ready: Callable[[], object] | None
    timeout: float
    popen: subprocess.Popen[bytes] = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def pgid(self) -> int:
        # start_new_session makes the child a session and group leader: pgid == pid.
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` exists (signal 0 only checks): whose leftovers a reaper
    may not touch yet."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid: int) -> bool:
    """True while any process of the group exists (signal 0 only checks)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """The processes of one test, by name."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Proc] = {}

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        ready: Callable[[], object] | None = None,
        timeout: float = 30.0,
        cwd: str | os.PathLike[str] | None = None,
    ) -> Proc:
        """Start ``argv``; with ``ready``, return only once ``ready()`` is truthy.

        ``env`` is added to this process's environment (not a replacement), so PATH and the
        venv stay usable. Raises ProcessStartError with the log tail if the process exits
        first or ``timeout`` passes.
        """
        if name in self.procs and self.procs[name].alive():
            raise ValueError(f"process {name!r} is already running")
        full_env = dict(os.environ)
        # Unbuffered, so a log shows what a process said right up to a crash or a kill.
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, list(argv), full_env, None if cwd is None else str(cwd), log_path,
                    ready, timeout, popen)
        self.procs[name] = proc
        if ready is not None:
            self._wait_ready(proc)
        return proc

    def _wait_ready(self, proc: Proc) -> None:
        deadline = time.monotonic() + proc.timeout
        last_error: BaseException | None = None
        while True:
            if not proc.alive():
                raise ProcessStartError(
                    f"{proc.name} exited with {proc.popen.returncode} before it was ready; "
                    f"log tail:\n{self.tail(proc.name)}"
                ) from last_error
            try:
                assert proc.ready is not None
                if proc.ready():
                    return
            except Exception as exc:  # noqa: BLE001 - not ready yet (connection refused, ...)
                last_error = exc
            if time.monotonic() >= deadline:
                self.stop(proc.name)
                raise ProcessStartError(
                    f"{proc.name} not ready after {proc.timeout:.0f}s; "
                    f"log tail:\n{self.tail(proc.name)}"
                ) from last_error
            time.sleep(0.1)

    def restart(self, name: str) -> Proc:
        """Stop ``name`` and start it again with the same argv, environment and readiness."""
        proc = self.procs[name]
        self.stop(name)
        return self.spawn(name, proc.argv, env=proc.env, ready=proc.ready,
                          timeout=proc.timeout, cwd=proc.cwd)

    def kill(self, name: str, sig: int = signal.SIGKILL, group: bool = True) -> None:
        """Send ``sig`` to the process (and by default its whole group) without waiting:
        fault tests use SIGKILL to play a crashed worker or a node that lost power."""
        proc = self.procs[name]
        try:
            if group:
                os.killpg(proc.pgid, sig)
            else:
                proc.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop(self, name: str, grace: float = 10.0) -> int | None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left.

        Returns the leader's exit code.
        """
        self._terminate(name)
        return self._reap(name, time.monotonic() + grace)

    def _terminate(self, name: str) -> None:
        proc = self.procs[name]
        if group_alive(proc.pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pgid, signal.SIGTERM)

    def _reap(self, name: str, deadline: float) -> int | None:
        """Wait for the group until ``deadline``, SIGKILL what is left, and wait for that."""
        proc = self.procs[name]
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        # The leader may be gone while its children still shut down: give them the rest of
        # the grace period, then kill them so nothing outlives the test.
        while group_alive(proc.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_alive(proc.pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pgid, signal.SIGKILL)
        proc.popen.wait()
        # SIGKILL is delivered asynchronously and orphans are reaped by init, not by us:
        # wait until the group has really gone, so "stopped" means no process is left.
        kill_deadline = time.monotonic() + 5
        while group_alive(proc.pgid) and time.monotonic() < kill_deadline:
            time.sleep(0.02)
        return proc.popen.returncode

    def stop_all(self, grace: float = 10.0) -> None:
        """Every process told to stop at once, then each waited for within the one grace
        period: a group's shutdown (Celery's warm shutdown, gunicorn's graceful one) takes
        seconds, and one after another they made every cloud's teardown the sum of them."""
        # Reverse start order: agents and workers are told before the API and brokers.
        names = list(reversed(list(self.procs)))
        for name in names:
            self._terminate(name)
        deadline = time.monotonic() + grace
        for name in names:
            self._reap(name, deadline)

    def log(self, name: str) -> str:
        return self.procs[name].log_path.read_text(errors="replace")

    def tail(self, name: str, lines: int = 60) -> str:
        return _tail(self.procs[name].log_path, lines)

    def tails(self, lines: int = 60) -> str:
        """Every process's log tail, for a failing test's report."""
        return "\n".join(
            f"----- {name} ({proc.log_path}) -----\n{_tail(proc.log_path, lines)}"
            for name, proc in self.procs.items()
        )


def settings_env(settings: object) -> dict[str, str]:
    """The ``SDC_*`` environment that makes a child process load the same settings."""
    from schemas.settings import to_environ

    return to_environ(settings)
