"""`sdc up --demo` (what `make demo` runs) on a private data dir and port, twice: the first
run provisions the demo machines over HTTPS with a password-protected Redis and stops cleanly
on SIGTERM; the second reuses the first run's machines and provisions none, so machines do
not pile up."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from headnode.cli.client import OpsClient
from headnode.cli.demo import DEMO_MACHINES, LIVE_STATES
from tests.integration.conftest import SDC
from tests.support.net import free_port
from tests.support.wait import wait_until

TOKEN = "demo-rerun-token"


def run_demo_once(data_dir: Path, log: Path, after: Any) -> Any:
    """`sdc up --demo` until it keeps serving; ``after(api, port)`` runs then; then SIGTERM,
    and every process it started is gone."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDC_")}
    env.update({"SDC_DATA_DIR": str(data_dir), "SDC_OPERATOR_TOKEN": TOKEN,
                "SDC_RECONCILE_INTERVAL": "1", "PYTHONUNBUFFERED": "1"})
    with open(log, "wb") as out:
        up = subprocess.Popen([SDC, "up", "--servers", "2", "--demo", "--port", str(port)],
                              env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: "keeps serving" in log.read_text(), timeout=180, interval=0.5,
                   message=lambda: f"the demo to finish:\n{log.read_text()[-3000:]}")
        # sdc up serves HTTPS with a certificate signed by the CA it made in the data dir
        result = after(OpsClient(f"https://127.0.0.1:{port}", TOKEN, timeout=30,
                                 ca_file=str(data_dir / "tls" / "ca.pem")), port)
        descendants = psutil.Process(up.pid).children(recursive=True)
        assert len(descendants) >= 6  # redis, api, worker, beat, mockcloud and their children
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        _, alive = psutil.wait_procs(descendants, timeout=15)
        assert not alive, f"left behind: {[p.pid for p in alive]}"
        return result
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()


def demo_machines(api: OpsClient) -> list[dict[str, Any]]:
    return [m for m in api.get("/ops/machines") if m["alias"].startswith("demo-")]


def settled(api: OpsClient, port: int) -> list[tuple[str, str]]:
    # a few reconcile rounds, so a node that lost its machines would have said so
    time.sleep(4)
    return sorted((m["alias"], m["state"]) for m in demo_machines(api))


def first_run_said_what_to_trust(log: Path, data_dir: Path) -> None:
    """What the first run prints: how to reach and trust its API; never Redis's password."""
    text = log.read_text()
    assert "Traceback" not in text
    ca_file = data_dir / "tls" / "ca.pem"
    assert "export SDC_API_URL=https://127.0.0.1:" in text
    assert f"SDC_CA_FILE={ca_file}" in text and ca_file.exists()
    password = (data_dir / "redis.conf").read_text().partition("requirepass ")[2].strip()
    assert len(password) >= 32 and password not in text
    for child_log in (data_dir / "logs").glob("*.log"):
        assert password not in child_log.read_text(errors="replace"), child_log
    assert text.count("running") >= DEMO_MACHINES, text  # the placement table


def test_a_second_demo_reuses_the_first_ones_machines(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = run_demo_once(data_dir, tmp_path / "up1.log", settled)
    assert first == [(f"demo-{n}", "running") for n in range(1, DEMO_MACHINES + 1)]
    first_run_said_what_to_trust(tmp_path / "up1.log", data_dir)
    second = run_demo_once(data_dir, tmp_path / "up2.log", settled)
    text = (tmp_path / "up2.log").read_text()
    assert f"reusing {DEMO_MACHINES} machine(s) of an earlier demo" in text
    assert "provisioned" not in text
    assert second == first
    assert all(state in LIVE_STATES for _, state in second)
    assert "Traceback" not in text
