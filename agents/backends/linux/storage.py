"""Where a Linux node keeps images and machines: one small interface, two drivers.

Both keep the SmartOS layout: one dataset per image with a read-only ``@final`` snapshot that
appears only once the image is complete, one copy-on-write clone of it per machine with the
machine's disk quota, and a machine's snapshots as read-only snapshots of its dataset.

``BtrfsStorage`` (a btrfs filesystem mounted at the pool path)::

    <pool>/images/<image>            subvolume the image was unpacked into
    <pool>/images/<image>@final      read-only snapshot of it, made last: "the image is here"
    <pool>/zones/<machine>           writable snapshot of images/<image>@final, qgroup limit
                                     (referenced bytes) = the machine's disk
    <pool>/zones/<machine>@<snap>    read-only snapshots of the machine
    <pool>/migrations/<machine>/<migration>/migration-N
                                     read-only snapshots a migration sent (on the source)
                                     or received (on the target), apart from the user's; a
                                     writable one is a receive that has not ended (btrfs
                                     makes it read-only last), never taken for a snapshot
    <pool>/.sdc/                     the agent's own files (bundles, manifests, temp files)

``ZfsStorage`` (OpenZFS; ``pool`` is a dataset such as ``tank/sdc``): ``<pool>/<image>`` with
``<pool>/<image>@final``, machines ``<pool>/<machine>`` cloned from it with ``quota``, and
snapshots ``<pool>/<machine>@<snap>``; the agent's files live in the agent's data dir.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from agents.backends.host import btrfs, zfs
from agents.backends.host.cmd import HostCommandError
from agents.backends.names import plain_name
from schemas.settings import SettingsError

FINAL = "final"


@dataclass(frozen=True)
class Snapshot:
    name: str
    created_at: float
    size_bytes: int
    order: int  # creation order; larger is newer


class Storage(Protocol):
    #: a directory on the node for the agent's own files about machines and images
    state_dir: Path

    def prepare(self) -> None: ...
    def image_ids(self) -> list[str]: ...
    def image_present(self, image_uuid: str) -> bool: ...
    def image_begin(self, image_uuid: str) -> Path: ...
    def image_seal(self, image_uuid: str) -> None: ...
    def image_discard(self, image_uuid: str) -> None: ...
    def image_size(self, image_uuid: str) -> int: ...
    def machine_clone(self, image_uuid: str, uuid: str, quota_bytes: int) -> Path: ...
    def machine_root(self, uuid: str) -> Path: ...
    def set_quota(self, uuid: str, quota_bytes: int) -> None: ...
    def machine_destroy(self, uuid: str) -> None: ...
    def snapshot_create(self, uuid: str, name: str) -> None: ...
    def snapshot_list(self, uuid: str) -> list[Snapshot]: ...
    def snapshot_rollback(self, uuid: str, name: str, quota_bytes: int) -> None: ...
    def snapshot_delete(self, uuid: str, name: str) -> None: ...
    def snapshot_path(self, uuid: str, name: str) -> Path: ...
    def usage(self) -> dict[str, int]: ...
    def pool_usage(self) -> tuple[int, int]: ...


# -- btrfs ---------------------------------------------------------------------------------------


class BtrfsStorage:
    def __init__(self, pool: Path) -> None:
        self.pool = pool
        self.images = pool / "images"
        self.zones = pool / "zones"
        self.migrations = pool / "migrations"
        self.state_dir = pool / ".sdc"

    def prepare(self) -> None:
        if not os.path.ismount(self.pool):
            raise SettingsError(f"SDC_POOL: {self.pool} is not a mounted btrfs filesystem "
                                "(make one with `sdc agent pool create`)")
        for path in (self.images, self.zones, self.migrations, self.state_dir):
            path.mkdir(exist_ok=True)
        self._ensure_quotas()
        self._finish_interrupted_rollbacks()
        # receives cut by an agent that died: nothing resumes them
        self.delete_subvolumes([p for p in sorted(self.migrations.glob("*/*/*"))
                                if not _read_only(p)])

    def _ensure_quotas(self) -> None:
        """Qgroups enforce the disk quotas: a pool made without them gets them now."""
        try:
            btrfs.qgroup_show(self.pool)
        except HostCommandError as exc:
            if "quotas not enabled" not in exc.stderr:
                raise
            btrfs.quota_enable(self.pool)

    # images

    def _image(self, image_uuid: str) -> Path:
        return self.images / plain_name(image_uuid, "image uuid")

    def _final(self, image_uuid: str) -> Path:
        return self.images / f"{plain_name(image_uuid, 'image uuid')}@{FINAL}"

    def image_ids(self) -> list[str]:
        return sorted(p.name.rsplit("@", 1)[0] for p in self.images.glob(f"*@{FINAL}"))

    def image_present(self, image_uuid: str) -> bool:
        return self._final(image_uuid).is_dir()

    def image_begin(self, image_uuid: str) -> Path:
        self.image_discard(image_uuid)
        path = self._image(image_uuid)
        btrfs.subvolume_create(path)
        return path

    def image_seal(self, image_uuid: str) -> None:
        # snapshot under a temporary name, then rename: @final appears complete or not at all
        partial = self.images / f".{image_uuid}@{FINAL}.partial"
        btrfs.subvolume_snapshot(self._image(image_uuid), partial, readonly=True)
        os.rename(partial, self._final(image_uuid))

    def image_discard(self, image_uuid: str) -> None:
        self.delete_subvolumes([self._final(image_uuid),
                                 self.images / f".{image_uuid}@{FINAL}.partial",
                                 self._image(image_uuid)])

    def image_size(self, image_uuid: str) -> int:
        for group in btrfs.qgroup_show(self.pool):
            if group.path == f"images/{image_uuid}@{FINAL}":
                return group.referenced
        return 0

    # machines

    def machine_root(self, uuid: str) -> Path:
        return self.zones / plain_name(uuid, "machine uuid")

    def machine_clone(self, image_uuid: str, uuid: str, quota_bytes: int) -> Path:
        root = self.machine_root(uuid)
        if not root.exists():
            btrfs.subvolume_snapshot(self._final(image_uuid), root)
        btrfs.qgroup_limit(root, quota_bytes)
        return root

    def set_quota(self, uuid: str, quota_bytes: int) -> None:
        btrfs.qgroup_limit(self.machine_root(uuid), quota_bytes)

    def machine_destroy(self, uuid: str) -> None:
        self.wait_deleted(self.migration_cleanup(uuid, None)[1])
        self.delete_subvolumes([*self._snapshot_paths(uuid), self.zones / f"{uuid}.rollback",
                                self.machine_root(uuid)])

    # snapshots

    def snapshot_path(self, uuid: str, name: str) -> Path:
        machine = plain_name(uuid, "machine uuid")
        return self.zones / f"{machine}@{plain_name(name, 'snapshot name')}"

    def _snapshot_paths(self, uuid: str) -> list[Path]:
        return sorted(self.zones.glob(f"{plain_name(uuid, 'machine uuid')}@*"))

    def snapshot_create(self, uuid: str, name: str) -> None:
        btrfs.subvolume_snapshot(self.machine_root(uuid), self.snapshot_path(uuid, name),
                                 readonly=True)

    def snapshot_list(self, uuid: str) -> list[Snapshot]:
        paths = self._snapshot_paths(uuid)
        if not paths:
            return []
        sizes = {g.path: g.exclusive for g in btrfs.qgroup_show(self.pool)}
        snapshots = []
        for path in paths:
            shown = btrfs.subvolume_show(path)
            created = datetime.strptime(shown["Creation time"], "%Y-%m-%d %H:%M:%S %z")
            snapshots.append(Snapshot(
                name=path.name.split("@", 1)[1],
                created_at=created.timestamp(),
                size_bytes=sizes.get(f"zones/{path.name}", 0),
                order=int(shown["Subvolume ID"]),
            ))
        return sorted(snapshots, key=lambda s: s.order)

    def snapshot_rollback(self, uuid: str, name: str, quota_bytes: int) -> None:
        """Replace the machine's subvolume by a writable snapshot of ``name``; as on SmartOS,
        snapshots newer than ``name`` are destroyed (the caller has stopped the machine)."""
        snapshots = self.snapshot_list(uuid)
        target = next(s for s in snapshots if s.name == name)
        self.delete_subvolumes([self.snapshot_path(uuid, s.name)
                                 for s in snapshots if s.order > target.order])
        root = self.machine_root(uuid)
        aside = self.zones / f"{uuid}.rollback"
        os.rename(root, aside)
        btrfs.subvolume_snapshot(self.snapshot_path(uuid, name), root)
        btrfs.qgroup_limit(root, quota_bytes)
        self.delete_subvolumes([aside])

    def snapshot_delete(self, uuid: str, name: str) -> None:
        self.delete_subvolumes([self.snapshot_path(uuid, name)])

    def _finish_interrupted_rollbacks(self) -> None:
        for aside in self.zones.glob("*.rollback"):
            root = self.zones / aside.name.removesuffix(".rollback")
            if root.exists():
                self.delete_subvolumes([aside])
            else:
                os.rename(aside, root)

    # migration snapshots

    def _migration_dir(self, uuid: str, migration_uuid: str) -> Path:
        return (self.migrations / plain_name(uuid, "machine uuid")
                / plain_name(migration_uuid, "migration uuid"))

    def migration_snapshot(self, uuid: str, migration_uuid: str, name: str) -> Path:
        return self._migration_dir(uuid, migration_uuid) / plain_name(name, "snapshot name")

    def migration_snapshot_create(self, uuid: str, migration_uuid: str, name: str) -> Path:
        path = self.migration_snapshot(uuid, migration_uuid, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        btrfs.subvolume_snapshot(self.machine_root(uuid), path, readonly=True)
        return path

    def migration_received(self, uuid: str, migration_uuid: str, name: str) -> bool:
        """Whether the snapshot is here whole (read-only: sent, or its receive ended)."""
        path = self.migration_snapshot(uuid, migration_uuid, name)
        return path.is_dir() and _read_only(path)

    def migration_receiving(self, uuid: str, migration_uuid: str, name: str) -> Path:
        """The directory to receive snapshot ``name`` in; what a cut receive of it left
        goes."""
        self.migration_discard(uuid, migration_uuid, name)
        where = self._migration_dir(uuid, migration_uuid)
        where.mkdir(parents=True, exist_ok=True)
        return where

    def migration_snapshots(self, uuid: str, migration_uuid: str) -> list[Path]:
        return sorted(self._migration_dir(uuid, migration_uuid).glob("*"))

    def migration_discard(self, uuid: str, migration_uuid: str, name: str) -> None:
        self.delete_subvolumes([self.migration_snapshot(uuid, migration_uuid, name)])

    def migration_activate(self, uuid: str, migration_uuid: str, name: str,
                           quota_bytes: int) -> None:
        """The machine's root a writable snapshot of a received one (never the received one
        made writable: it would no longer parent an increment); a root there is replaced."""
        root = self.machine_root(uuid)
        self.delete_subvolumes([root])
        btrfs.subvolume_snapshot(self.migration_snapshot(uuid, migration_uuid, name), root)
        btrfs.qgroup_limit(root, quota_bytes)

    def migration_cleanup(self, uuid: str, keep: Path | None) -> tuple[list[str], list[int]]:
        """Delete the machine's migration snapshots (of every migration; with ``keep``,
        those of its migration older than it), and the directories left empty; returns the
        names deleted and their ids (for :meth:`wait_deleted`). A newer one is a later
        sync's: a clean-up that comes late (the head node sends it without waiting) must not
        take it from under its stream."""
        top = self.migrations / plain_name(uuid, "machine uuid")
        gone = [p for p in sorted(top.glob("*/*"))
                if keep is None or p.parent != keep.parent
                or _sync_number(p.name) < _sync_number(keep.name)]
        ids = self.start_deleting(gone)
        for directory in [*sorted(top.glob("*")), top]:
            with contextlib.suppress(OSError):  # not empty: it holds ``keep``
                directory.rmdir()
        return [p.name for p in gone], ids

    # usage

    def usage(self) -> dict[str, int]:
        """Referenced bytes of each machine's subvolume (what its quota limits)."""
        used = {}
        for group in btrfs.qgroup_show(self.pool):
            top, _, name = group.path.partition("/")
            if top == "zones" and "@" not in name and "." not in name:
                used[name] = group.referenced
        return used

    def pool_usage(self) -> tuple[int, int]:
        st = os.statvfs(self.pool)
        return st.f_blocks * st.f_frsize, (st.f_blocks - st.f_bfree) * st.f_frsize

    def delete_subvolumes(self, paths: list[Path]) -> None:
        """Delete subvolumes and wait for the cleaner, so their qgroups go too (the kernel
        drops a qgroup once its subvolume is fully freed; one left over is destroyed here)."""
        self.wait_deleted(self.start_deleting(paths))

    def start_deleting(self, paths: list[Path]) -> list[int]:
        """Delete the subvolumes there are of ``paths``; their ids, for :meth:`wait_deleted`."""
        ids = []
        for path in paths:
            if path.is_dir():
                ids.append(btrfs.root_id(path))
                btrfs.subvolume_delete(path)
        return ids

    def wait_deleted(self, ids: list[int]) -> None:
        """Wait for the cleaner to free deleted subvolumes (it frees them in the order they
        were deleted, whoever deleted them: a large one deleted before may take long)."""
        for subvolume_id in ids:
            btrfs.subvolume_sync(self.pool, subvolume_id)
            # normally already gone with its subvolume
            with contextlib.suppress(HostCommandError):
                btrfs.qgroup_destroy(f"0/{subvolume_id}", self.pool)


def _sync_number(name: str) -> int:
    """N of ``migration-N`` (-1 for another name: the oldest)."""
    number = name.rpartition("-")[2]
    return int(number) if number.isdigit() else -1


def _read_only(path: Path) -> bool:
    # btrfs refuses writes to a read-only subvolume with EROFS, access(2) included
    return not os.access(path, os.W_OK)


# -- OpenZFS ---------------------------------------------------------------------------------------


class ZfsStorage:
    def __init__(self, dataset: str, state_dir: Path) -> None:
        self.dataset = dataset
        self.state_dir = state_dir

    def _ds(self, uuid: str) -> str:
        return f"{self.dataset}/{plain_name(uuid, 'uuid')}"

    def _snapshot(self, uuid: str, name: str) -> str:
        return f"{self._ds(uuid)}@{plain_name(name, 'snapshot name')}"

    def _final(self, image_uuid: str) -> str:
        return f"{self._ds(image_uuid)}@{FINAL}"

    def prepare(self) -> None:
        if not zfs.exists(self.dataset):
            zfs.create(self.dataset)
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def _mountpoint(self, name: str) -> Path:
        rows = zfs.list_datasets(["name", "mountpoint"], [name])
        return Path(rows[0]["mountpoint"])

    def image_ids(self) -> list[str]:
        """The datasets with a ``@final`` snapshot that are not clones: a machine is a clone
        of its image's ``@final``, and a machine snapshot its user named "final" must not
        make it look like an image."""
        rows = zfs.list_datasets(["name", "origin"], [self.dataset],
                                 types="filesystem,snapshot", recursive=True, depth=2)
        suffix = f"@{FINAL}"
        sealed = {r["name"].removesuffix(suffix) for r in rows if r["name"].endswith(suffix)}
        prefix = self.dataset + "/"
        return sorted(r["name"].removeprefix(prefix) for r in rows
                      if r["name"] in sealed and r["origin"] == "-"
                      and r["name"].startswith(prefix))

    def image_present(self, image_uuid: str) -> bool:
        return zfs.exists(self._final(image_uuid))

    def image_begin(self, image_uuid: str) -> Path:
        self.image_discard(image_uuid)
        zfs.create(self._ds(image_uuid))
        return self._mountpoint(self._ds(image_uuid))

    def image_seal(self, image_uuid: str) -> None:
        zfs.snapshot(self._final(image_uuid))  # atomic: the image is there or it is not

    def image_discard(self, image_uuid: str) -> None:
        if zfs.exists(self._ds(image_uuid)):
            zfs.destroy(self._ds(image_uuid), recursive=True)

    def image_size(self, image_uuid: str) -> int:
        rows = zfs.list_datasets(["name", "referenced"], [self._final(image_uuid)],
                                 types="snapshot")
        return int(rows[0]["referenced"]) if rows else 0

    def machine_root(self, uuid: str) -> Path:
        return self._mountpoint(self._ds(uuid))

    def machine_clone(self, image_uuid: str, uuid: str, quota_bytes: int) -> Path:
        if not zfs.exists(self._ds(uuid)):
            zfs.clone(self._final(image_uuid), self._ds(uuid), {"quota": str(quota_bytes)})
        else:
            zfs.set_property(self._ds(uuid), "quota", str(quota_bytes))
        return self.machine_root(uuid)

    def set_quota(self, uuid: str, quota_bytes: int) -> None:
        zfs.set_property(self._ds(uuid), "quota", str(quota_bytes))

    def machine_destroy(self, uuid: str) -> None:
        if zfs.exists(self._ds(uuid)):
            zfs.destroy(self._ds(uuid), recursive=True)

    def snapshot_path(self, uuid: str, name: str) -> Path:
        return self.machine_root(uuid) / ".zfs" / "snapshot" / plain_name(name, "snapshot name")

    def snapshot_create(self, uuid: str, name: str) -> None:
        zfs.snapshot(self._snapshot(uuid, name))

    def snapshot_list(self, uuid: str) -> list[Snapshot]:
        rows = zfs.list_datasets(["name", "creation", "used", "createtxg"], [self._ds(uuid)],
                                 types="snapshot", depth=1)
        return sorted((Snapshot(name=r["name"].split("@", 1)[1], created_at=float(r["creation"]),
                                size_bytes=int(r["used"]), order=int(r["createtxg"]))
                       for r in rows), key=lambda s: s.order)

    def snapshot_rollback(self, uuid: str, name: str, quota_bytes: int) -> None:
        zfs.rollback(self._snapshot(uuid, name))

    def snapshot_delete(self, uuid: str, name: str) -> None:
        zfs.destroy(self._snapshot(uuid, name))

    def usage(self) -> dict[str, int]:
        rows = zfs.list_datasets(["name", "used"], [self.dataset], recursive=True, depth=1)
        prefix = self.dataset + "/"
        return {r["name"].removeprefix(prefix): int(r["used"])
                for r in rows if r["name"].startswith(prefix)}

    def pool_usage(self) -> tuple[int, int]:
        row = zfs.list_datasets(["name", "used", "available"], [self.dataset])[0]
        used = int(row["used"])
        return used + int(row["available"]), used
