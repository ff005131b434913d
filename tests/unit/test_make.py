"""The Makefile and its scripts: `make triton` installs node and npm the way the other host
packages are installed (scripts/ensure-apt.sh), and `make clean` removes what it says."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENSURE_APT = REPO / "scripts" / "ensure-apt.sh"


def make_dry_run(target: str) -> list[str]:
    result = subprocess.run(["make", "--no-print-directory", "-n", "-C", str(REPO), target],
                            capture_output=True, text=True, check=True, timeout=60)
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_make_triton_installs_node_and_npm_before_the_cli() -> None:
    lines = make_dry_run("triton")
    assert lines[0] == "scripts/ensure-apt.sh 'node:nodejs' 'npm:npm'"
    assert lines[1].startswith("scripts/ensure-triton.sh")
    test_prerequisites = subprocess.run(
        ["make", "-p", "-n", "-C", str(REPO), "help"], capture_output=True, text=True,
        check=True, timeout=60).stdout
    assert "\ntest: deps venv triton browser lint" in test_prerequisites


@pytest.fixture
def fake_apt(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose apt-get and sudo only record their arguments (no network, no install)."""
    bin_dir, record = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    for tool in ("apt-get", "sudo"):
        script = bin_dir / tool
        body = 'exec "$@"' if tool == "sudo" else f'echo "$*" >> {record}'
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    for tool in ("bash", "sh", "env", "tee", "chmod", "rm"):  # what the scripts run with
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    return {"PATH": str(bin_dir), "HOME": str(tmp_path)}, record


def test_ensure_apt_installs_only_the_missing(fake_apt: tuple[dict[str, str], Path]) -> None:
    env, record = fake_apt
    result = subprocess.run(["bash", str(ENSURE_APT), "node:nodejs", "npm:npm", "sh:dash"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "node not found, will install nodejs" in result.stdout
    assert "npm not found, will install npm" in result.stdout
    calls = record.read_text().splitlines()
    assert calls[0] == "update"
    assert calls[1] == "install -y --no-install-recommends nodejs npm"


def test_ensure_apt_lets_no_package_start_its_service(
        fake_apt: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    """openssh-server would start sshd on every interface: while installing, policy-rc.d
    refuses every service start, and it is gone afterwards."""
    env, record = fake_apt
    policy = tmp_path / "policy-rc.d"
    apt = Path(env["PATH"]) / "apt-get"
    apt.write_text(f'#!/bin/sh\necho "$* policy:$("{policy}"; echo $?)" >> {record}\n')
    result = subprocess.run(["bash", str(ENSURE_APT), "no-such-sshd:openssh-server"],
                            env={**env, "SDC_POLICY_RC": str(policy)}, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    calls = record.read_text().splitlines()
    assert calls[1] == "install -y --no-install-recommends openssh-server policy:101"
    assert not policy.exists()


def test_ensure_apt_does_nothing_when_all_is_there(
        fake_apt: tuple[dict[str, str], Path]) -> None:
    env, record = fake_apt
    result = subprocess.run(["bash", str(ENSURE_APT), "sh:dash", "bash:bash"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout) == (0, "")
    assert not record.exists()


def test_make_clean_removes_what_it_says_and_keeps_venv_and_cache(tmp_path: Path) -> None:
    shutil.copy(REPO / "Makefile", tmp_path / "Makefile")
    removed = [".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis",
               ".import_linter_cache", "build", "dist", "sdc.egg-info", ".sdc-data/logs",
               "headnode/__pycache__"]
    kept = [".venv/lib/__pycache__", ".cache/triton/node_modules", "headnode/keep"]
    for path in removed + kept:
        (tmp_path / path).mkdir(parents=True)
    env = {**os.environ, "MAKEFLAGS": ""}
    subprocess.run(["make", "-s", "clean"], cwd=tmp_path, env=env, check=True, timeout=60,
                   capture_output=True)
    assert [p for p in removed if (tmp_path / p).exists()] == []
    assert [p for p in kept if not (tmp_path / p).exists()] == []
    assert not (tmp_path / ".sdc-data").exists()


def test_make_demo_keeps_its_data_where_clean_removes_it() -> None:
    demo = [line for line in make_dry_run("demo") if " up " in line]
    assert demo == [".venv/bin/sdc up --servers 3 --demo --data-dir .sdc-data"]
