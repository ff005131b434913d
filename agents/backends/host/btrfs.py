"""``btrfs``: subvolumes, snapshots, qgroups and usage of a pool."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agents.backends.host.cmd import run

BTRFS = "btrfs"


@dataclass(frozen=True)
class Qgroup:
    qgroupid: str  # "0/<subvolume id>"
    referenced: int
    exclusive: int
    max_referenced: int | None  # None: no limit
    path: str  # relative to the filesystem's top level; "<stale>" once deleted


def subvolume_create(path: Path) -> None:
    run([BTRFS, "subvolume", "create", str(path)])


def subvolume_snapshot(source: Path, dest: Path, *, readonly: bool = False) -> None:
    run([BTRFS, "subvolume", "snapshot", *(["-r"] if readonly else []), str(source), str(dest)])


def subvolume_delete(path: Path) -> None:
    # commit: a deleted subvolume must not come back after a crash (its machine is gone)
    run([BTRFS, "subvolume", "delete", "--commit-after", str(path)])


def subvolume_sync(pool: Path, subvolume_id: int) -> None:
    """Wait until the cleaner has freed a deleted subvolume (its qgroup goes with it)."""
    run([BTRFS, "subvolume", "sync", str(pool), str(subvolume_id)])


def root_id(path: Path) -> int:
    return int(run([BTRFS, "inspect-internal", "rootid", str(path)]).strip())


def subvolume_show(path: Path) -> dict[str, str]:
    """``btrfs subvolume show`` as ``{field: value}`` (e.g. "Creation time", "Subvolume ID")."""
    out = run([BTRFS, "subvolume", "show", str(path)])
    fields: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        key, sep, value = line.strip().partition(":")
        if sep and value.strip():
            fields[key.strip()] = value.strip()
    return fields


def quota_enable(path: Path) -> None:
    run([BTRFS, "quota", "enable", str(path)])


def qgroup_limit(path: Path, size_bytes: int | None) -> None:
    """Limit what the subvolume at ``path`` references (``None``: no limit)."""
    run([BTRFS, "qgroup", "limit", "none" if size_bytes is None else str(size_bytes), str(path)])


def qgroup_destroy(qgroupid: str, pool: Path) -> None:
    run([BTRFS, "qgroup", "destroy", qgroupid, str(pool)])


def qgroup_show(pool: Path, *, sync: bool = False) -> list[Qgroup]:
    """Every level-0 qgroup of the filesystem (``--sync`` first commits pending usage)."""
    argv = [BTRFS, "qgroup", "show", "--raw", "-re", *(["--sync"] if sync else []), str(pool)]
    return parse_qgroup_show(run(argv))


def parse_qgroup_show(out: str) -> list[Qgroup]:
    groups = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 6 or not re.fullmatch(r"0/\d+", parts[0]):
            continue
        groups.append(Qgroup(
            qgroupid=parts[0],
            referenced=int(parts[1]),
            exclusive=int(parts[2]),
            max_referenced=None if parts[3] == "none" else int(parts[3]),
            path=" ".join(parts[5:]),
        ))
    return groups


def filesystem_usage(pool: Path) -> dict[str, int]:
    """``btrfs filesystem usage -b``: the "Overall" figures in bytes, keyed by their label
    ("Device size", "Used", "Free (estimated)", ...)."""
    return parse_filesystem_usage(run([BTRFS, "filesystem", "usage", "-b", str(pool)]))


def parse_filesystem_usage(out: str) -> dict[str, int]:
    figures: dict[str, int] = {}
    for line in out.splitlines():
        if not line.startswith("    ") or line.startswith("     "):
            continue  # only the indented lines of the "Overall:" block
        label, sep, rest = line.strip().partition(":")
        words = rest.split()
        if sep and words and words[0].isdigit():
            figures[label.strip()] = int(words[0])
    return figures


def mkfs(device: str, label: str = "sdcpool") -> None:
    run(["mkfs.btrfs", "-q", "-f", "-L", label, device])
