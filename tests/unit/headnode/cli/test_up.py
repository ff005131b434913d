"""The `sdc up` supervisor: children in their own process groups, stopped with nothing left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from headnode.cli.main import main
from headnode.cli.supervisor import StartupFailed, Supervisor, group_alive
from headnode.cli.supervisor import wait_for as supervisor_wait_for
from headnode.cli.up import fleet_prefix, port_taken

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
# A child that forks a grandchild into its own group, as gunicorn and Celery workers do.
FORKER = [sys.executable, "-c", textwrap.dedent("""
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(60)
""")]
# A child that shrugs off SIGTERM: only SIGKILL stops it.
STUBBORN = [sys.executable, "-c", textwrap.dedent("""
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(60)
""")]


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    children = [sup.start("one", SLEEPER), sup.start("two", FORKER)]
    pgids = [c.pgid for c in children]
    for child in children:
        assert os.getpgid(child.proc.pid) == child.proc.pid != os.getpgid(0)
    time.sleep(0.5)  # let the grandchild start
    assert sup.stop(timeout=5.0) == []
    assert not any(group_alive(pgid) for pgid in pgids)
    assert all(c.proc.returncode is not None for c in children)


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    stubborn = sup.start("stubborn", STUBBORN)
    assert wait_for(lambda: "ready" in (tmp_path / "logs" / "stubborn.log").read_text())
    started = time.monotonic()
    assert sup.stop(timeout=0.5) == ["stubborn"]
    assert time.monotonic() - started < 5
    assert stubborn.proc.returncode == -signal.SIGKILL
    assert not group_alive(stubborn.pgid)


def test_a_dead_child_is_noticed_with_its_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    sup.start("ok", SLEEPER)
    bad = sup.start("bad", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    assert wait_for(lambda: sup.dead_child() is not None)
    assert sup.dead_child() is bad
    assert bad.proc.returncode == 3
    assert "boom" in bad.tail()
    sup.stop(timeout=5.0)


SUPERVISED = textwrap.dedent("""
    import sys
    from pathlib import Path
    from headnode.cli.supervisor import Supervisor, shutdown_signals, ShutdownRequested
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    sup = Supervisor(Path(sys.argv[1]))
    with shutdown_signals():
        try:
            for name in ("first", "second"):
                sup.start(name, sleeper)
            print(" ".join(str(c.pgid) for c in sup.children), flush=True)
            while True:
                sup.check()
                __import__("time").sleep(0.1)
        except ShutdownRequested:
            pass
        finally:
            sup.stop()
    print("stopped", flush=True)
""")


def test_sigterm_to_the_supervisor_stops_every_child(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        pgids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pgids) == 2 and all(group_alive(p) for p in pgids)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout.read().strip() == "stopped"
        assert not any(group_alive(p) for p in pgids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_up_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_taken(port)
        result = CliRunner().invoke(main, ["up", "--data-dir", str(tmp_path / "sdc"),
                                           "--port", str(port)])
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is taken" in result.stderr
    assert not (tmp_path / "sdc" / "logs").exists()


def test_fleet_prefix_is_stable_per_data_dir(tmp_path: Path) -> None:
    assert fleet_prefix(tmp_path / "a") == fleet_prefix(tmp_path / "a")
    assert fleet_prefix(tmp_path / "a") != fleet_prefix(tmp_path / "b")


def test_a_child_started_without_a_variable_does_not_get_it(tmp_path: Path) -> None:
    # sdc up's simulated nodes must not read the operator's head-node config file
    sup = Supervisor(tmp_path / "logs", {"SDC_CONFIG": "/etc/sdc/headnode.toml", "KEEP": "1"})
    show = [sys.executable, "-c",
            "import os; print(os.environ.get('SDC_CONFIG'), os.environ.get('KEEP'))"]
    child = sup.start("show", show, without=("SDC_CONFIG",))
    assert child.proc.wait(timeout=10) == 0
    assert child.tail().strip() == "None 1"
    sup.stop(timeout=5.0)


def test_waiting_with_progress_lasts_while_progress_comes(tmp_path: Path) -> None:
    """A fleet that keeps registering is waited for past the timeout; one that stalls is
    given up on one timeout after its last progress, saying where it stuck."""
    sup = Supervisor(tmp_path / "logs")
    start = time.monotonic()
    count = {"n": 0}

    def registering() -> int:
        count["n"] = min(int((time.monotonic() - start) / 0.1), 12)  # one more every 0.1 s
        return count["n"]

    done = supervisor_wait_for("servers", lambda: registering() >= 12 and "all", sup,
                               timeout=0.3, interval=0.02, progress=lambda: count["n"])
    assert done == "all" and time.monotonic() - start >= 1.1  # well past the 0.3 s timeout

    stalled_at = time.monotonic()
    with pytest.raises(StartupFailed, match=r"not ready after 0.3 s \(stuck at 12\)"):
        supervisor_wait_for("servers", lambda: None, sup, timeout=0.3, interval=0.02,
                            progress=lambda: count["n"])
    assert 0.3 <= time.monotonic() - stalled_at < 2
    with pytest.raises(StartupFailed, match=r"not ready after 0.1 s$"):
        supervisor_wait_for("the API", lambda: None, sup, timeout=0.1, interval=0.02)
