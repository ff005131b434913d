"""A SmartOS zone's snapshots as vmadm keeps them: ``vmadm create-snapshot`` names the ZFS
snapshot ``zones/<uuid>@vmsnap-<name>``; ``vmadm get`` lists them newest first with their
ZFS ``written`` as ``size`` (older platforms give none: asked of ZFS), creation times in whole
seconds."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from agents.backends.host import vmadm, zfs
from agents.backends.names import plain_name

ZPOOL = "zones"
VMSNAP = "vmsnap-"


def iso_time(text: str) -> float:
    """vmadm's ISO 8601 times (``2026-12-02T07:41:27.000Z``) as unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def list_snapshots(uuid: str) -> list[dict[str, Any]] | None:
    """The zone's snapshots, oldest first; None if there is no such zone."""
    vm = vmadm.get(uuid)
    if vm is None:
        return None
    entries = vm.get("snapshots") or []
    sizes = {} if all("size" in s for s in entries) else _zfs_sizes(uuid)
    snapshots = [{"name": s["name"], "created_at": iso_time(s["created_at"]),
                  "size_mb": math.ceil(int(s.get("size", sizes.get(s["name"], 0)))
                                       / (1024 * 1024))}
                 for s in entries]
    # reversed, the stable sort keeps snapshots of one second in the order they were taken
    return sorted(reversed(snapshots), key=lambda s: s["created_at"])


def rollback(uuid: str, name: str, *, stopped: bool) -> None:
    """Roll the zone back, keeping its state: ``vmadm rollback-snapshot`` would boot a
    stopped zone too, so a stopped zone gets the ``zfs rollback -r`` VM.js runs."""
    if stopped:
        machine, snapshot = plain_name(uuid, "machine uuid"), plain_name(name, "snapshot name")
        zfs.rollback(f"{ZPOOL}/{machine}@{VMSNAP}{snapshot}")
    else:
        vmadm.rollback_snapshot(uuid, name)


def _zfs_sizes(uuid: str) -> dict[str, int]:
    return {row["name"].split("@", 1)[1].removeprefix(VMSNAP): int(row["used"])
            for row in zfs.list_datasets(["name", "used"], [f"{ZPOOL}/{plain_name(uuid, 'uuid')}"],
                                         types="snapshot", depth=1)}
