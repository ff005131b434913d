"""``sdc agent supervise``: the agent as a service on a node without systemd (a container,
a minimal host), doing for it what deploy/sdc-agent.service does under systemd.

It runs ``sdc agent run`` (with the settings of ``--env-file``, read again at each start, as
systemd's EnvironmentFile), starts it again whenever it dies (after 2 s, longer while it keeps
dying at once), and on SIGTERM or SIGINT stops it and every process of its process group
(systemd's KillMode=control-group), then exits. ``--pidfile`` holds its pid under a lock for
as long as it lives: a second one is refused, and whoever reads the file can tell a live
supervisor from a stale file by trying the lock. ``--detach`` returns once the supervisor is
running in a session of its own, its output and the agent's in ``--log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

#: systemd's RestartSec of the unit
RESTART_DELAY = 2.0
#: an agent that lived less than this died "at once": the next start waits twice as long
MIN_UPTIME = 10.0
MAX_DELAY = 30.0
#: the unit's TimeoutStopSec: how long the agent gets after SIGTERM before SIGKILL
STOP_TIMEOUT = 30.0
DETACH_WAIT = 10.0
POLL = 0.2


class AlreadyRunning(Exception):
    pass


def agent_argv() -> list[str]:
    return [sys.executable, "-m", "agents.cli", "run"]


def read_env_file(path: Path | None) -> dict[str, str]:
    """KEY=VALUE lines (as systemd's EnvironmentFile, without quotes); # starts a comment."""
    if path is None:
        return {}
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def agent_environ(inherited: Mapping[str, str], env_file: Path | None) -> dict[str, str]:
    """The agent's environment: the env file's settings, and of what the supervisor was
    started with no SDC_* (a login shell's would otherwise mix in, as no unit's would)."""
    kept = {k: v for k, v in inherited.items() if not k.startswith("SDC_")}
    return {**kept, **read_env_file(env_file)}


def main(pidfile: Path, log: Path, env_file: Path | None, detach: bool) -> int:
    if detach:
        child = os.fork()
        if child:
            return _wait_detached(child, pidfile)
        os.setsid()  # no terminal, no session of the SSH command that started it
    try:
        lock = hold_pidfile(pidfile)
    except AlreadyRunning as exc:
        print(f"sdc agent supervise: {exc}", file=sys.stderr)
        return 1
    _redirect_output(log)
    try:
        return supervise(agent_argv(), env_file)
    finally:
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()
        lock.close()


def hold_pidfile(pidfile: Path) -> IO[str]:
    """The pidfile, locked and holding our pid; AlreadyRunning if another holds it."""
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    handle = open(pidfile, "a+")  # noqa: SIM115 - held open (locked) for the process's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        held_by = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunning(f"already running (pid {held_by}, {pidfile})") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def supervise(argv: list[str], env_file: Path | None) -> int:
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    delay = RESTART_DELAY
    while not stopping.is_set():
        began = time.monotonic()
        env = agent_environ(os.environ, env_file)
        # A process group of its own: stopping it reaches the agent's worker and whatever
        # else it started, not the supervisor.
        child = subprocess.Popen(argv, env=env, process_group=0)
        code = _wait(child, stopping)
        _kill_group(child.pid, signal.SIGKILL)  # what outlived the agent
        if stopping.is_set():
            break
        lived = time.monotonic() - began
        delay = RESTART_DELAY if lived >= MIN_UPTIME else min(delay * 2, MAX_DELAY)
        _say(f"the agent exited with {code} after {lived:.0f} s; starting it again in "
             f"{delay:g} s")
        stopping.wait(delay)
    _say("stopped")
    return 0


def _wait(child: subprocess.Popen[bytes], stopping: threading.Event) -> int:
    while not stopping.is_set():
        with contextlib.suppress(subprocess.TimeoutExpired):
            return child.wait(timeout=POLL)
    _kill_group(child.pid, signal.SIGTERM)
    try:
        return child.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _say(f"the agent did not stop within {STOP_TIMEOUT:g} s: killing it")
        _kill_group(child.pid, signal.SIGKILL)
        return child.wait()


def _kill_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_detached(child: int, pidfile: Path) -> int:
    """The parent of --detach: done once the child holds the pidfile, or its exit code."""
    deadline = time.monotonic() + DETACH_WAIT
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        with contextlib.suppress(FileNotFoundError):
            if pidfile.read_text().strip() == str(child):
                return 0
        time.sleep(POLL / 4)
    print(f"sdc agent supervise: not running after {DETACH_WAIT:g} s", file=sys.stderr)
    return 1


def _redirect_output(log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)


def _say(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"{stamp} sdc agent supervise[{os.getpid()}]: {message}", file=sys.stderr,
          flush=True)
