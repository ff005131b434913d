"""The worker supervisor and the consumer watchdog (agents/supervise.py), with real children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents import supervise

PYTHON = sys.executable


def counting_child(tmp_path: Path, exits: list[int]) -> list[str]:
    """A child that exits with the next code of ``exits`` each time it is started."""
    script = tmp_path / "child.py"
    script.write_text(
        "import pathlib, sys\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "n = int(runs.read_text()) if runs.exists() else 0\n"
        "runs.write_text(str(n + 1))\n"
        f"sys.exit({exits!r}[n])\n"
    )
    return [PYTHON, str(script)]


def runs(tmp_path: Path) -> int:
    return int((tmp_path / "runs").read_text())


def test_a_worker_that_dies_is_started_again(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "QUICK_DEATHS", 10)
    monkeypatch.setattr(supervise, "MAX_DELAY", 0.01)
    assert supervise.supervise(counting_child(tmp_path, [1, supervise.EXIT_STALLED, 0]),
                               {}) == 0
    assert runs(tmp_path) == 3


def test_a_worker_that_cannot_start_is_not_restarted(tmp_path: Path) -> None:
    code = supervise.supervise(counting_child(tmp_path, [supervise.EXIT_CONFIG, 0]), {})
    assert code == 1 and runs(tmp_path) == 1


def test_a_late_config_exit_is_a_death_like_any_other(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. a connection reset that the CLI's error wrapper reports like a bad setting
    monkeypatch.setattr(supervise, "MIN_UPTIME", 0.0)
    monkeypatch.setattr(supervise, "MAX_DELAY", 0.01)
    assert supervise.supervise(counting_child(tmp_path, [supervise.EXIT_CONFIG, 0]), {}) == 0
    assert runs(tmp_path) == 2


def test_repeated_deaths_at_start_give_up(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "QUICK_DEATHS", 3)
    monkeypatch.setattr(supervise, "MAX_DELAY", 0.01)
    assert supervise.supervise(counting_child(tmp_path, [1, 1, 1, 0]), {}) == 1
    assert runs(tmp_path) == 3


def test_sigterm_stops_supervisor_and_child(tmp_path: Path) -> None:
    marker = tmp_path / "child-pid"
    code = (
        "import os, pathlib, signal, sys, time\n"
        f"pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "time.sleep(60)\n"
    )
    run_supervised = ("import sys; from agents import supervise; "
                      f"sys.exit(supervise.supervise([sys.executable, '-c', {code!r}], {{}}))")
    outer = subprocess.Popen([PYTHON, "-c", run_supervised])
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(marker.read_text())
    outer.send_signal(signal.SIGTERM)
    assert outer.wait(timeout=20) == 0
    with pytest.raises(ProcessLookupError):
        os.kill(child_pid, 0)


def test_watchdog_calls_a_silent_consumer_with_waiting_messages_stalled() -> None:
    dog = supervise.ConsumerWatchdog("redis://127.0.0.1:1/0", ["q"], stall_after=30)
    now = dog.last_activity
    assert not dog.stalled(waiting=5, now=now + 10)  # quiet, but not for long
    assert not dog.stalled(waiting=0, now=now + 100)  # nothing to take: idle, not stuck
    assert dog.stalled(waiting=5, now=now + 100)
    dog._started()  # a long task is running: busy, not stuck
    assert not dog.stalled(waiting=5, now=dog.last_activity + 100)
    dog._finished()
    assert dog.stalled(waiting=5, now=dog.last_activity + 100)


def test_unrecoverable_error_ends_the_worker_at_once() -> None:
    code = ("import logging; from agents import supervise; supervise.exit_on_unrecoverable(); "
            "logging.getLogger('celery.worker.worker').critical('Unrecoverable error: %r', "
            "AttributeError('x')); print('still here')")
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == supervise.EXIT_STALLED
    assert "still here" not in done.stdout
