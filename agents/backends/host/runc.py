"""``runc``: OCI containers, one per machine, state kept under one ``--root`` directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.backends.host.cmd import HostCommandError, run

RUNC = "runc"


def _runc(root: Path, *args: str) -> list[str]:
    return [RUNC, "--root", str(root), *args]


def run_detached(root: Path, bundle: Path, container_id: str, console: Path) -> None:
    """Start the container of ``bundle``; its stdio (and runc's complaints) go to ``console``."""
    run(_runc(root, "run", "--detach", "--bundle", str(bundle), container_id), output=console)


def state(root: Path, container_id: str) -> dict[str, Any] | None:
    """``runc state`` as a dict, or None when runc does not know the container."""
    try:
        out = run(_runc(root, "state", container_id))
    except HostCommandError as exc:
        if "does not exist" in exc.stderr or "not exist" in exc.stderr:
            return None
        raise
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def list_containers(root: Path) -> list[dict[str, Any]]:
    """``runc list --format json``: [{id, pid, status, bundle, rootfs, created, owner}]."""
    out = run(_runc(root, "list", "--format", "json")).strip()
    parsed: list[dict[str, Any]] = json.loads(out) if out and out != "null" else []
    return parsed


def kill(root: Path, container_id: str, signal: str = "TERM") -> None:
    run(_runc(root, "kill", container_id, signal))


def delete(root: Path, container_id: str, *, force: bool = False) -> None:
    run(_runc(root, "delete", *(["--force"] if force else []), container_id))


def update(
    root: Path,
    container_id: str,
    *,
    memory_bytes: int | None = None,
    pids_limit: int | None = None,
    cpu_quota: int | None = None,
    cpu_period: int | None = None,
    cpu_shares: int | None = None,
) -> None:
    argv = _runc(root, "update")
    if memory_bytes is not None:
        argv += ["--memory", str(memory_bytes)]
    if pids_limit is not None:
        argv += ["--pids-limit", str(pids_limit)]
    if cpu_period is not None:
        argv += ["--cpu-period", str(cpu_period)]
    if cpu_quota is not None:
        argv += ["--cpu-quota", str(cpu_quota)]
    if cpu_shares is not None:
        argv += ["--cpu-share", str(cpu_shares)]
    run([*argv, container_id])


def exec_(root: Path, container_id: str, argv: list[str], *, timeout: float = 60) -> str:
    return run(_runc(root, "exec", container_id, *argv), timeout=timeout)
