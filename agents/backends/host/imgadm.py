"""SmartOS ``imgadm``: images installed in the zpool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.backends.host.cmd import HostCommandError, run

IMGADM = "imgadm"
#: imgadm(8) EXIT STATUS: 3 is "ImageNotInstalled"; older imgadm said so with exit 1
NOT_INSTALLED_EXITS = (1, 3)


def get(uuid: str) -> dict[str, Any] | None:
    """``imgadm get UUID``: the installed image's manifest info; None when not installed."""
    try:
        out = run([IMGADM, "get", uuid])
    except HostCommandError as exc:
        said = exc.stderr
        if exc.returncode in NOT_INSTALLED_EXITS and (
                "not installed" in said or "ImageNotInstalled" in said
                or "not found" in said.lower()):
            return None
        raise
    info: dict[str, Any] = json.loads(out)
    return info


def list_images() -> list[dict[str, Any]]:
    """``imgadm list -j``: [{manifest: {...}, zpool, source?}]."""
    parsed: list[dict[str, Any]] = json.loads(run([IMGADM, "list", "-j"]) or "[]")
    return parsed


def install(manifest: Path, file: Path) -> None:
    """``imgadm install -m MANIFEST -f FILE``: a local image file and its IMGAPI manifest,
    without contacting any source (the head node is not an IMGAPI ``imgadm import`` could
    use). imgadm keeps the manifest as given, tags and requirements included."""
    run([IMGADM, "install", "-m", str(manifest), "-f", str(file)], timeout=3600)
