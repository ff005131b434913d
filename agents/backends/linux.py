"""A real Linux compute node: machines are runc containers on copy-on-write clones of images.

Storage is a :class:`agents.backends.storage.Storage` driver (btrfs by default, OpenZFS where
the node has it; see that module for the pool layout). Each machine also has a directory
``<state_dir>/machines/<uuid>/`` with its runc bundle (``config.json``, rebuilt before every
start so a rename or resize applies at the next boot), ``machine.json`` (its record: alias,
limits, image), ``metadata.json`` (its tags and customer metadata) and ``console.log`` (the
container's stdout and stderr). Image manifests are ``<state_dir>/images/<uuid>.json``.

The truth about a machine's state is runc's (``runc state``/``runc list`` under
``runc_root``): a machine is running while its container runs, else stopped. A new backend on
the same pool therefore rediscovers every machine and its true state after an agent restart
(a container whose process died is reported stopped).

Node memory in status reports is what the machines are promised (``ram_mb`` minus the RAM of
running machines), as the head node's capacity counts it, not the kernel's free memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from agents.backends import oci, transfer
from agents.backends.base import BackendError, ImageNotFound, MachineNotFound
from agents.backends.host import runc, tar
from agents.backends.host.cmd import HostCommandError
from agents.backends.storage import BtrfsStorage, Snapshot, Storage, ZfsStorage
from agents.config import AgentSettings, parse_traits, resolve_hostname
from schemas.agent import apply_metadata_change
from schemas.settings import SettingsError

AGENT_VERSION = "sdc-agent-linux/0.1"
MIB = 1024 * 1024
#: limits of a machine, as stored in machine.json and changed by machine_update
LIMIT_FIELDS = ("ram_mb", "disk_mb", "cpu_cap", "vcpus", "max_lwps")
#: a machine's tags and customer metadata, beside its bundle (what its metadata service serves)
METADATA_FILE = "metadata.json"
#: what a Linux node runs (sysinfo "SDC Runs"): containers of Linux userlands; no zones of
#: illumos images, no hardware VMs
RUNS_OSES = ("linux", "other")
RUNS_TYPES = ("lx-dataset", "docker", "zone-dataset", "other")
RUNNING_STATUSES = ("running", "paused", "pausing", "created", "creating")


class LinuxBackend:
    def __init__(
        self,
        server_uuid: str,
        hostname: str,
        storage: Storage,
        *,
        runc_root: Path,
        stop_timeout: float = 10.0,
        usage_ttl: float = 5.0,
        traits: dict[str, Any] | None = None,
    ) -> None:
        self.server_uuid = server_uuid
        self.hostname = hostname
        self.storage = storage
        self.runc_root = runc_root
        self.stop_timeout = stop_timeout
        self.usage_ttl = usage_ttl
        self.traits = dict(traits or {})
        storage.prepare()
        self.machines_dir = storage.state_dir / "machines"
        self.manifests_dir = storage.state_dir / "images"
        self.tmp_dir = storage.state_dir / "tmp"
        for path in (self.machines_dir, self.manifests_dir, self.tmp_dir, runc_root):
            path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._machine_locks: dict[str, threading.Lock] = {}
        self._records: dict[str, dict[str, Any]] = self._load_records()
        self._provisioning: set[str] = set()
        self._usage: dict[str, int] = {}
        self._pool: tuple[int, int] = (0, 0)
        self._usage_at = -math.inf
        self._container_cache: dict[str, dict[str, Any]] = {}
        self._containers_at = -math.inf

    # -- node facts ---------------------------------------------------------------------------

    def sysinfo(self) -> dict[str, Any]:
        size, _ = self.storage.pool_usage()
        return {
            "uuid": self.server_uuid,
            "hostname": self.hostname,
            "backend": "linux",
            "system_type": _system_type(),
            "cpus": os.cpu_count() or 1,
            "ram_mb": _meminfo_mb("MemTotal"),
            "pool_size_mb": size // MIB,
            "boot_time": _boot_time(),
            "nic_tags": ["admin"],
            "traits": dict(self.traits),
            "kernel": platform.release(),
            "agent_version": AGENT_VERSION,
            "runs": {"os": list(RUNS_OSES), "type": list(RUNS_TYPES)},
        }

    def status(self) -> dict[str, Any]:
        machines = self.list_machines()
        size, used = self._pool_figures()
        ram_mb = _meminfo_mb("MemTotal")
        promised = sum(m["ram_mb"] for m in machines if m["state"] in ("running", "provisioning"))
        return {
            "server_uuid": self.server_uuid,
            "machines": machines,
            "images": self.storage.image_ids(),
            "pool_size_mb": size // MIB,
            "pool_used_mb": used // MIB,
            "ram_mb": ram_mb,
            "ram_free_mb": max(0, ram_mb - promised),
            "timestamp": time.time(),
        }

    def list_machines(self) -> list[dict[str, Any]]:
        containers = self._containers()
        usage = self._disk_usage()
        with self._lock:
            records = [dict(r) for r in self._records.values()]
            provisioning = set(self._provisioning)
        return [self._describe(r, containers.get(r["uuid"]), usage, r["uuid"] in provisioning)
                for r in sorted(records, key=lambda r: r["created_at"])]

    # -- images -------------------------------------------------------------------------------

    def image_ensure_present(self, image: dict[str, Any]) -> dict[str, Any]:
        uuid = image["uuid"]
        if self.storage.image_present(uuid):
            return self._image_record(uuid)
        with self._file_lock(self.manifests_dir / f".{uuid}.lock"):
            if not self.storage.image_present(uuid):  # another request imported it meanwhile
                self._import(image)
        self._invalidate_usage()
        return self._image_record(uuid)

    def _import(self, image: dict[str, Any]) -> None:
        uuid = image["uuid"]
        download = self.tmp_dir / f"{uuid}.download"
        manifest = self.manifests_dir / f"{uuid}.json"
        try:
            file = transfer.download(image, download)
            root = self.storage.image_begin(uuid)
            tar.extract(download, root, file["compression"])
            unpacked_mb = math.ceil(_tree_bytes(root) / MIB)
            _write_json(manifest, {"uuid": uuid, "name": image.get("name", ""),
                                   "version": image.get("version", ""), "file": file,
                                   "size_mb": unpacked_mb})
            self.storage.image_seal(uuid)
        except BaseException:
            # nothing of a failed import stays in the pool
            self.storage.image_discard(uuid)
            manifest.unlink(missing_ok=True)
            raise
        finally:
            download.unlink(missing_ok=True)

    def _image_record(self, uuid: str) -> dict[str, Any]:
        try:
            manifest = json.loads((self.manifests_dir / f"{uuid}.json").read_text())
        except FileNotFoundError:
            manifest = {}
        size_mb = manifest.get("size_mb")
        if size_mb is None:  # imported by an older agent: measure the pool
            size_mb = math.ceil(self.storage.image_size(uuid) / MIB)
        return {"uuid": uuid, "name": manifest.get("name", ""),
                "version": manifest.get("version", ""), "size_mb": size_mb}

    # -- machines -----------------------------------------------------------------------------

    def machine_create(self, spec: dict[str, Any]) -> dict[str, Any]:
        uuid = spec["uuid"]
        with self._machine(uuid):
            record = self._records.get(uuid)
            if record is not None and record.get("complete"):
                return self._load(uuid)
            if not self.storage.image_present(spec["image_uuid"]):
                raise ImageNotFound(f"image {spec['image_uuid']} is not in the pool of this node")
            record = {
                "uuid": uuid, "alias": spec["alias"], "owner_uuid": spec["owner_uuid"],
                "image_uuid": spec["image_uuid"], "ram_mb": spec["ram_mb"],
                "disk_mb": spec["disk_mb"], "cpu_cap": spec["cpu_cap"], "vcpus": spec["vcpus"],
                "max_lwps": spec["max_lwps"], "created_at": time.time(), "complete": False,
            }
            with self._lock:
                self._provisioning.add(uuid)
            try:
                self._save_record(record)
                self._save_metadata(uuid, {
                    "tags": dict(spec.get("tags") or {}),
                    "customer_metadata": dict(spec.get("metadata") or {})})
                self.storage.machine_clone(spec["image_uuid"], uuid, spec["disk_mb"] * MIB)
                self._boot(record)
                record["complete"] = True
                self._save_record(record)
            finally:
                with self._lock:
                    self._provisioning.discard(uuid)
            self._invalidate_usage()
            return self._load(uuid)

    def machine_start(self, uuid: str) -> dict[str, Any]:
        with self._machine(uuid):
            record = self._get(uuid)
            if not self._is_running(uuid):
                self._boot(record)
            return self._load(uuid)

    def machine_stop(self, uuid: str) -> dict[str, Any]:
        with self._machine(uuid):
            self._get(uuid)
            self._halt(uuid)
            return self._load(uuid)

    def machine_reboot(self, uuid: str) -> dict[str, Any]:
        with self._machine(uuid):
            record = self._get(uuid)
            self._halt(uuid)
            self._boot(record)
            return self._load(uuid)

    def machine_destroy(self, uuid: str) -> dict[str, Any]:
        with self._machine(uuid):
            record = self._records.get(uuid) or {"uuid": uuid}
            if runc.state(self.runc_root, uuid) is not None:
                runc.delete(self.runc_root, uuid, force=True)
            self.storage.machine_destroy(uuid)
            shutil.rmtree(self.machines_dir / uuid, ignore_errors=True)
            with self._lock:
                self._records.pop(uuid, None)
            self._invalidate_usage()
            return _destroyed(record)

    def machine_load(self, uuid: str) -> dict[str, Any]:
        self._get(uuid)
        return self._load(uuid)

    def machine_update(self, params: dict[str, Any]) -> dict[str, Any]:
        """Resize (any limit given) and/or rename. Memory, CPU and pids apply at once to a
        running machine (``runc update``), the disk quota at once, the hostname at next boot."""
        uuid = params["uuid"]
        with self._machine(uuid):
            record = dict(self._get(uuid))
            changes = {k: params[k] for k in (*LIMIT_FIELDS, "alias") if params.get(k) is not None}
            record.update(changes)
            if "disk_mb" in changes:
                self.storage.set_quota(uuid, record["disk_mb"] * MIB)
            if self._is_running(uuid) and changes.keys() & {"ram_mb", "cpu_cap", "max_lwps"}:
                runc.update(
                    self.runc_root, uuid,
                    memory_bytes=record["ram_mb"] * MIB,
                    pids_limit=record["max_lwps"],
                    cpu_period=oci.CPU_PERIOD_US,
                    cpu_quota=oci.cpu_quota_us(record["cpu_cap"]),
                    cpu_shares=oci.cpu_shares(record["cpu_cap"]),
                )
            self._write_bundle(record)
            self._save_record(record)
            self._invalidate_usage()
            return self._load(uuid)

    def machine_update_metadata(self, params: dict[str, Any]) -> dict[str, Any]:
        uuid = params["uuid"]
        with self._machine(uuid):
            meta = self._read_metadata(self._get(uuid))
            for kind in ("tags", "customer_metadata"):
                meta[kind] = apply_metadata_change(meta[kind],
                                                   params.get(f"remove_{kind}") or [],
                                                   params.get(f"set_{kind}") or {})
            self._save_metadata(uuid, meta)
            return meta

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_create(self, uuid: str, name: str) -> dict[str, Any]:
        with self._machine(uuid):
            self._get(uuid)
            if self._find_snapshot(uuid, name) is None:
                self.storage.snapshot_create(uuid, name)
            snapshot = self._find_snapshot(uuid, name)
            assert snapshot is not None
            return _snapshot_dict(snapshot)

    def snapshot_list(self, uuid: str) -> list[dict[str, Any]]:
        self._get(uuid)
        return [_snapshot_dict(s) for s in self.storage.snapshot_list(uuid)]

    def snapshot_rollback(self, uuid: str, name: str) -> dict[str, Any]:
        """Stop the machine if it runs, replace its dataset by the snapshot's content, and
        start it again if it was running."""
        with self._machine(uuid):
            record = self._get(uuid)
            if self._find_snapshot(uuid, name) is None:
                raise BackendError("SnapshotNotFound", f"machine {uuid} has no snapshot {name}")
            was_running = self._is_running(uuid)
            self._halt(uuid)
            self.storage.snapshot_rollback(uuid, name, record["disk_mb"] * MIB)
            if was_running:
                self._boot(record)
            self._invalidate_usage()
            return self._load(uuid)

    def snapshot_delete(self, uuid: str, name: str) -> str:
        with self._machine(uuid):
            self._get(uuid)
            if self._find_snapshot(uuid, name) is not None:
                self.storage.snapshot_delete(uuid, name)
            self._invalidate_usage()
            return name

    def _find_snapshot(self, uuid: str, name: str) -> Snapshot | None:
        return next((s for s in self.storage.snapshot_list(uuid) if s.name == name), None)

    # -- images from machines -------------------------------------------------------------------

    def image_create_from_machine(
        self, uuid: str, image: dict[str, Any], upload: dict[str, Any]
    ) -> dict[str, Any]:
        """Snapshot the machine, archive the snapshot (tar.gz of its root filesystem), PUT it
        to ``upload``; the temporary snapshot and archive are removed whatever happens."""
        snap = f"image-{image['uuid']}"
        archive = self.tmp_dir / f"{image['uuid']}.tar.gz"
        with self._machine(uuid):
            self._get(uuid)
            if self._find_snapshot(uuid, snap) is None:
                self.storage.snapshot_create(uuid, snap)
        try:
            tar.create(self.storage.snapshot_path(uuid, snap), archive, "gzip")
            size, sha256 = transfer.file_digest(archive)
            transfer.upload(archive, upload)
        finally:
            archive.unlink(missing_ok=True)
            with self._machine(uuid):
                if self._find_snapshot(uuid, snap) is not None:
                    self.storage.snapshot_delete(uuid, snap)
        return {"uuid": image["uuid"], "size": size, "sha256": sha256, "compression": "gzip"}

    # -- containers ---------------------------------------------------------------------------

    def _boot(self, record: dict[str, Any]) -> None:
        uuid = record["uuid"]
        # runc keeps a container's state in <root>/<id>/: no directory, nothing to clean up
        # (saves a runc start on every create)
        if (self.runc_root / uuid).exists() and runc.state(self.runc_root, uuid) is not None:
            runc.delete(self.runc_root, uuid, force=True)  # a dead container of a past boot
        bundle = self._write_bundle(record)
        try:
            runc.run_detached(self.runc_root, bundle, uuid, bundle / "console.log")
        finally:
            self._invalidate_usage()

    def _halt(self, uuid: str) -> None:
        """SIGTERM, then SIGKILL once ``stop_timeout`` has passed; then forget the container."""
        state = runc.state(self.runc_root, uuid)
        if state is None:
            return
        if state["status"] in RUNNING_STATUSES:
            with contextlib.suppress(HostCommandError):  # it may have just exited
                runc.kill(self.runc_root, uuid, "TERM")
            if not self._wait_stopped(uuid, self.stop_timeout):
                with contextlib.suppress(HostCommandError):
                    runc.kill(self.runc_root, uuid, "KILL")
                self._wait_stopped(uuid, 10.0)
        runc.delete(self.runc_root, uuid, force=True)
        self._invalidate_usage()

    def _wait_stopped(self, uuid: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            state = runc.state(self.runc_root, uuid)
            if state is None or state["status"] == "stopped":
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def _is_running(self, uuid: str) -> bool:
        state = runc.state(self.runc_root, uuid)
        return state is not None and state["status"] in RUNNING_STATUSES

    def _write_bundle(self, record: dict[str, Any]) -> Path:
        bundle = self.machines_dir / record["uuid"]
        config = oci.config(record, self.storage.machine_root(record["uuid"]))
        _write_json(bundle / "config.json", config)
        return bundle

    # -- records ------------------------------------------------------------------------------

    def _load(self, uuid: str) -> dict[str, Any]:
        with self._lock:
            record = dict(self._records[uuid])
            provisioning = uuid in self._provisioning
        # the usage figures as last measured: an operation's answer need not wait for a
        # qgroup scan (status reports refresh them)
        with self._lock:
            usage = dict(self._usage)
        return self._describe(record, runc.state(self.runc_root, uuid), usage, provisioning)

    def _describe(
        self,
        record: dict[str, Any],
        container: dict[str, Any] | None,
        usage: dict[str, int],
        provisioning: bool,
    ) -> dict[str, Any]:
        running = container is not None and container["status"] in RUNNING_STATUSES
        if provisioning:
            state = "provisioning"
        elif not record.get("complete"):
            state = "failed" if not running else "running"
        else:
            state = "running" if running else "stopped"
        return {
            "uuid": record["uuid"],
            "alias": record.get("alias", ""),
            "state": state,
            "image_uuid": record.get("image_uuid", ""),
            "ram_mb": record.get("ram_mb", 0),
            "disk_mb": record.get("disk_mb", 0),
            "disk_used_mb": math.ceil(usage.get(record["uuid"], 0) / MIB),
            # runc's RFC 3339 time with nanoseconds: 3.11's fromisoformat takes it (to the µs)
            "boot_time": (datetime.fromisoformat(container["created"]).timestamp()
                          if running and container else None),
        }

    def _get(self, uuid: str) -> dict[str, Any]:
        with self._lock:
            record = self._records.get(uuid)
        if record is None:
            raise MachineNotFound(f"machine {uuid} does not exist on server {self.server_uuid}")
        return record

    def _save_record(self, record: dict[str, Any]) -> None:
        _write_json(self.machines_dir / record["uuid"] / "machine.json", record)
        with self._lock:
            self._records[record["uuid"]] = dict(record)

    def _save_metadata(self, uuid: str, meta: dict[str, Any]) -> None:
        _write_json(self.machines_dir / uuid / METADATA_FILE, meta)

    def _read_metadata(self, record: dict[str, Any]) -> dict[str, Any]:
        path = self.machines_dir / record["uuid"] / METADATA_FILE
        if path.exists():
            return dict(json.loads(path.read_text()))
        # made by an agent that kept them in machine.json
        return {"tags": dict(record.get("tags") or {}),
                "customer_metadata": dict(record.get("metadata") or {})}

    def _load_records(self) -> dict[str, dict[str, Any]]:
        records = {}
        for path in self.machines_dir.glob("*/machine.json"):
            record = json.loads(path.read_text())
            records[record["uuid"]] = record
        return records

    @contextlib.contextmanager
    def _machine(self, uuid: str) -> Iterator[None]:
        """One operation at a time on a machine (the agent runs tasks in several threads)."""
        with self._lock:
            lock = self._machine_locks.setdefault(uuid, threading.Lock())
        with lock:
            yield

    @staticmethod
    @contextlib.contextmanager
    def _file_lock(path: Path) -> Iterator[None]:
        # flock, not a threading lock: two agent processes on one pool import an image once too
        with open(path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- usage (cached: status is checked every 0.5 s, qgroup figures cost a command) ---------

    def _disk_usage(self) -> dict[str, int]:
        self._refresh_usage()
        with self._lock:
            return dict(self._usage)

    def _pool_figures(self) -> tuple[int, int]:
        self._refresh_usage()
        with self._lock:
            return self._pool

    def _refresh_usage(self) -> None:
        if time.monotonic() - self._usage_at < self.usage_ttl:
            return
        usage, pool = self.storage.usage(), self.storage.pool_usage()
        with self._lock:
            self._usage, self._pool, self._usage_at = usage, pool, time.monotonic()

    def _invalidate_usage(self) -> None:
        with self._lock:
            self._usage_at = -math.inf
            self._containers_at = -math.inf

    def _containers(self) -> dict[str, dict[str, Any]]:
        """``runc list`` (a Go binary start, ~20 ms), asked again only after an operation,
        every ``usage_ttl`` seconds, or at once when a running container's init process is
        gone (checked in /proc, which costs microseconds)."""
        with self._lock:
            cached, at = self._container_cache, self._containers_at
        fresh = time.monotonic() - at < self.usage_ttl
        if fresh and all(_same_process(c) for c in cached.values()
                         if c["status"] in RUNNING_STATUSES):
            return cached
        containers = {c["id"]: {**c, "starttime": _process_start(c.get("pid") or 0)}
                      for c in runc.list_containers(self.runc_root)}
        with self._lock:
            self._container_cache, self._containers_at = containers, time.monotonic()
        return containers


def _snapshot_dict(snapshot: Snapshot) -> dict[str, Any]:
    return {"name": snapshot.name, "created_at": snapshot.created_at,
            "size_mb": math.ceil(snapshot.size_bytes / MIB)}


def _destroyed(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": record["uuid"],
        "alias": record.get("alias", ""),
        "state": "destroyed",
        "image_uuid": record.get("image_uuid", ""),
        "ram_mb": record.get("ram_mb", 0),
        "disk_mb": record.get("disk_mb", 0),
        "disk_used_mb": 0,
        "boot_time": None,
    }


def _write_json(path: Path, data: Any) -> None:
    """Whole file or old file, never half of one (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (an unpacked image, before it is sealed)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(directory, name)).st_size
    return total


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of /proc/PID/stat), None if it is gone or
    a zombie (a pid alone could have been reused by another process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _same_process(container: dict[str, Any]) -> bool:
    start = container.get("starttime")
    return start is not None and _process_start(container.get("pid") or 0) == start


def _meminfo_mb(field: str) -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name == field:
                return int(rest.split()[0]) // 1024
    raise BackendError("NodeInfo", f"/proc/meminfo has no {field}")


def _boot_time() -> float | None:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    return None


def _system_type() -> str:
    try:
        product = Path("/sys/class/dmi/id/product_name").read_text().strip()
    except OSError:
        product = ""
    return product or "Linux"


def make_storage(settings: AgentSettings) -> Storage:
    if not settings.pool:
        raise SettingsError("SDC_POOL is not set (make one with `sdc agent pool create`)")
    if settings.storage == "btrfs":
        return BtrfsStorage(Path(settings.pool))
    if settings.storage == "zfs":
        return ZfsStorage(settings.pool, settings.data_dir / "zfs-state")
    raise SettingsError(f"SDC_STORAGE: unknown storage driver {settings.storage!r} (btrfs or zfs)")


def from_settings(settings: AgentSettings, server_uuid: str) -> LinuxBackend:
    return LinuxBackend(
        server_uuid,
        resolve_hostname(settings),
        make_storage(settings),
        runc_root=settings.runc_root,
        stop_timeout=settings.stop_timeout,
        traits=parse_traits(settings),
    )
