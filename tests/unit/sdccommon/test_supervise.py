"""The worker supervisor and the consumer watchdog (sdccommon/supervise.py), with real children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdccommon import supervise

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


def assert_child_dies_with(outer: subprocess.Popen[bytes], marker: Path) -> None:
    """Wait for the child to write its pid to ``marker``, SIGKILL ``outer``, and expect the
    child gone within 5 s."""
    deadline = time.monotonic() + 20
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child_pid = int(marker.read_text())
    outer.kill()
    outer.wait(timeout=10)
    deadline = time.monotonic() + 5
    while process_lives(child_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not process_lives(child_pid)


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
    run_supervised = ("import sys; from sdccommon import supervise; "
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
    code = ("import logging; from sdccommon import supervise; supervise.exit_on_unrecoverable(); "
            "logging.getLogger('celery.worker.worker').critical('Unrecoverable error: %r', "
            "AttributeError('x')); print('still here')")
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == supervise.EXIT_STALLED
    assert "still here" not in done.stdout


def test_the_child_dies_with_a_killed_supervisor(tmp_path: Path) -> None:
    """SIGKILL leaves a supervisor no chance to forward anything: the kernel ends the child."""
    marker = tmp_path / "child-pid"
    code = (f"import os, pathlib, time; pathlib.Path({str(marker)!r}).write_text("
            "str(os.getpid())); time.sleep(60)")
    run_supervised = ("import sys; from sdccommon import supervise; "
                      f"sys.exit(supervise.supervise([sys.executable, '-c', {code!r}], {{}}))")
    assert_child_dies_with(subprocess.Popen([PYTHON, "-c", run_supervised]), marker)


def test_a_child_whose_supervisor_is_gone_before_it_runs_exits_at_once() -> None:
    """Between fork and exec the child checks that its parent is still the supervisor."""
    arm = supervise._die_with_parent()
    assert arm is not None
    # Run the check in a grandchild: its parent is not the process that built ``arm``.
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked child
        grandchild = os.fork()
        if grandchild == 0:
            arm()
            os._exit(0)
        _, status = os.waitpid(grandchild, 0)
        os._exit(os.waitstatus_to_exitcode(status))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1


def test_on_start_hears_each_child_and_pass_fds_reach_it(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    started: list[int] = []
    code = f"import os; os.write({write_end}, b'x')"
    try:
        assert supervise.supervise([PYTHON, "-c", code], {}, pass_fds=[write_end],
                                   on_start=started.append) == 0
        assert os.read(read_end, 1) == b"x"
    finally:
        os.close(read_end)
        os.close(write_end)
    assert len(started) == 1 and started[0] > 0


def process_lives(pid: int) -> bool:
    """A zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_an_orphaned_child_ends_itself_where_the_kernel_would_not(tmp_path: Path) -> None:
    """The check for kernels without PR_SET_PDEATHSIG (SmartOS): a parent started without the
    death signal, killed with SIGKILL, still takes its child with it."""
    marker = tmp_path / "child-pid"
    child = (f"import os, pathlib, time; from sdccommon import supervise; "
             f"supervise.watch_supervisor(0.05); "
             f"pathlib.Path({str(marker)!r}).write_text(str(os.getpid())); time.sleep(60)")
    parent = ("import os, subprocess, sys, time; "
              f"subprocess.Popen([sys.executable, '-c', {child!r}], env={{**os.environ, "
              f"{supervise.SUPERVISOR_ENV!r}: str(os.getpid())}}); time.sleep(60)")
    assert_child_dies_with(subprocess.Popen([PYTHON, "-c", parent]), marker)


def sleeper(marker: Path) -> str:
    """A child that writes its pid to ``marker``, then sleeps until SIGTERM (exit 0)."""
    return ("import os, pathlib, signal, sys, time\n"
            f"pathlib.Path({str(marker)!r}).write_text(str(os.getpid()))\n"
            "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
            "time.sleep(60)\n")


def test_a_group_runs_every_child_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    markers = [tmp_path / f"child-{n}" for n in range(3)]
    commands = [([PYTHON, "-c", sleeper(marker)], {}) for marker in markers]
    run_group = ("import sys; from sdccommon import supervise; "
                 f"sys.exit(supervise.supervise_all({commands!r}))")
    outer = subprocess.Popen([PYTHON, "-c", run_group])
    deadline = time.monotonic() + 20
    while not all(m.exists() and m.read_text() for m in markers) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = {int(m.read_text()) for m in markers}
    assert len(pids) == 3
    outer.send_signal(signal.SIGTERM)
    assert outer.wait(timeout=20) == 0
    assert not any(process_lives(pid) for pid in pids)


def test_a_group_member_that_cannot_start_stops_the_group(tmp_path: Path) -> None:
    marker = tmp_path / "sleeper"
    started = time.monotonic()
    code = supervise.supervise_all([
        ([PYTHON, "-c", sleeper(marker)], {}),
        (counting_child(tmp_path, [supervise.EXIT_CONFIG]), {})])
    assert code == 1 and time.monotonic() - started < 20
    # the sleeper was ended (perhaps before it could even write its pid)
    assert not (marker.exists() and marker.read_text()
                and process_lives(int(marker.read_text())))
