"""SmartOS ``imgadm``: images installed in the zpool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.backends.host.cmd import HostCommandError, run

IMGADM = "imgadm"


def get(uuid: str) -> dict[str, Any] | None:
    """``imgadm get UUID``: the installed image's manifest info; None when not installed."""
    try:
        out = run([IMGADM, "get", uuid])
    except HostCommandError as exc:
        if exc.returncode == 1 and ("not installed" in exc.stderr or "ImageNotInstalled"
                                    in exc.stderr or "not found" in exc.stderr.lower()):
            return None
        raise
    info: dict[str, Any] = json.loads(out)
    return info


def list_images() -> list[dict[str, Any]]:
    """``imgadm list -j``: [{manifest: {...}, zpool, source?}]."""
    parsed: list[dict[str, Any]] = json.loads(run([IMGADM, "list", "-j"]) or "[]")
    return parsed


def install(manifest: Path, file: Path) -> None:
    """Install a local image file (its manifest beside it) without contacting any source."""
    run([IMGADM, "install", "-m", str(manifest), "-f", str(file)], timeout=3600)
