"""A sim node's snapshots of a machine: a list, oldest first, kept as SmartOS would."""

from __future__ import annotations

import time
from typing import Any

from agents.backends.base import BackendError


def take(snapshots: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], bool]:
    """The snapshot ``name``, taken now unless it exists; and whether it is new."""
    existing = next((s for s in snapshots if s["name"] == name), None)
    if existing is not None:
        return existing, False
    snapshot = {"name": name, "created_at": time.time(), "size_mb": 0}
    snapshots.append(snapshot)
    return snapshot, True


def roll_back(snapshots: list[dict[str, Any]], machine: dict[str, Any], name: str) -> None:
    """As on SmartOS: snapshots newer than ``name`` are gone, a running machine reboots."""
    index = next((i for i, s in enumerate(snapshots) if s["name"] == name), None)
    if index is None:
        raise BackendError("SnapshotNotFound",
                           f"machine {machine['uuid']} has no snapshot {name}")
    del snapshots[index + 1:]
    if machine["state"] == "running":
        machine["boot_time"] = max(time.time(), (machine["boot_time"] or 0.0) + 1e-6)


def delete(snapshots: list[dict[str, Any]], name: str) -> None:
    snapshots[:] = [s for s in snapshots if s["name"] != name]
