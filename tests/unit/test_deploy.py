"""The systemd units in deploy/: valid for systemd, and none leaves a process behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
INSTALLED_SDC = "/opt/sdc/.venv/bin/sdc"
#: where `sdc server setup` installs the agent on a node (headnode/nodesetup/layout.py)
NODE_SDC = "/opt/sdc/agent/current/bin/sdc"


def settings_of(unit: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit (a key may repeat, as EnvironmentFile does)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";", "[")):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_there_are_units() -> None:
    assert {u.name for u in UNITS} >= {"sdc-agent.service", "sdc-api.service",
                                       "sdc-worker.service", "sdc-beat.service"}


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_stopping_a_unit_stops_its_whole_control_group(unit: Path) -> None:
    # KillMode=process left an agent's worker child running after the agent was killed:
    # two agents for one server.
    assert settings_of(unit).get("KillMode", ["control-group"]) in (["control-group"],
                                                                    ["mixed"])


def test_the_agent_is_always_restarted() -> None:
    assert settings_of(DEPLOY / "sdc-agent.service")["Restart"] == ["always"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    # verify wants the command to exist: point it at this checkout's sdc
    copy = tmp_path / unit.name
    sdc = str(Path(sys.executable).parent / "sdc")
    copy.write_text(unit.read_text().replace(INSTALLED_SDC, sdc).replace(NODE_SDC, sdc))
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr
