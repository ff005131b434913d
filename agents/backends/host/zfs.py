"""``zfs``: datasets, snapshots and clones (SmartOS, and Linux nodes with OpenZFS)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from agents.backends.host.cmd import HostCommandError, StdoutFile, run

ZFS = "zfs"


def create(name: str, properties: dict[str, str] | None = None) -> None:
    run([ZFS, "create", *_props(properties), name])


def snapshot(snapshot_name: str) -> None:
    run([ZFS, "snapshot", snapshot_name])


def clone(snapshot_name: str, name: str, properties: dict[str, str] | None = None) -> None:
    run([ZFS, "clone", *_props(properties), snapshot_name, name])


def destroy(name: str, *, recursive: bool = False) -> None:
    run([ZFS, "destroy", *(["-r"] if recursive else []), name])


def rollback(snapshot_name: str, *, destroy_newer: bool = True) -> None:
    # -r: like vmadm rollback-snapshot, snapshots newer than the target are destroyed
    run([ZFS, "rollback", *(["-r"] if destroy_newer else []), snapshot_name])


def set_property(name: str, prop: str, value: str) -> None:
    run([ZFS, "set", f"{prop}={value}", name])


def rename(old: str, new: str) -> None:
    run([ZFS, "rename", old, new])


def list_datasets(
    fields: Sequence[str],
    names: Sequence[str] = (),
    *,
    types: str = "filesystem",
    recursive: bool = False,
    depth: int | None = None,
) -> list[dict[str, str]]:
    """``zfs list -Hp -o FIELDS``: one dict per row (tab-separated, exact numbers)."""
    argv = [ZFS, "list", "-Hp", "-t", types, "-o", ",".join(fields)]
    if recursive:
        argv.append("-r")
    if depth is not None:
        argv += ["-d", str(depth)]
    return parse_list(run([*argv, *names]), fields)


def parse_list(out: str, fields: Sequence[str]) -> list[dict[str, str]]:
    rows = []
    for line in out.splitlines():
        if line.strip():
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return rows


def exists(name: str) -> bool:
    try:
        run([ZFS, "list", "-Hp", "-t", "all", "-o", "name", name])
    except HostCommandError as exc:
        if "does not exist" in exc.stderr:
            return False
        raise
    return True


def send(snapshot_name: str, output: Path) -> None:
    """A full send stream of ``snapshot_name`` into the file ``output`` (zfs's stdout only:
    what it says on stderr stays out of the stream, and in the error when it fails)."""
    output.unlink(missing_ok=True)
    run([ZFS, "send", snapshot_name], output=StdoutFile(output), timeout=3600)


def _props(properties: dict[str, str] | None) -> list[str]:
    argv: list[str] = []
    for key, value in (properties or {}).items():
        argv += ["-o", f"{key}={value}"]
    return argv
