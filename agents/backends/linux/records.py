"""What a Linux node remembers of each machine, beside its runc bundle in
``<state_dir>/machines/<uuid>/``: ``machine.json`` (its record: alias, limits, image, NICs, init)
and ``metadata.json`` (its tags and customer metadata, what its metadata service serves, and
``serial``, the count of their changes on this node: 0 at create, +1 at every change that
changes something, whether the head node's or the guest's; the head node keeps the map of
the highest serial it has seen). A record with ``hidden: true`` is a migration's other copy
(:mod:`~agents.backends.linux.migration`): kept, but neither reported nor booted.

The records are read once when the agent starts and kept in memory; every change is written
through (whole file or old file, never half of one). One operation at a time runs on a
machine (:meth:`MachineRecords.machine`): the agent runs tasks in several threads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agents.backends.base import BackendError, MachineNotFound
from agents.backends.jsonfile import write_json
from agents.backends.names import plain_name
from schemas.agent import apply_metadata_change

MIB = 1024 * 1024
RECORD_FILE = "machine.json"
METADATA_FILE = "metadata.json"
METADATA_LOCK_FILE = "metadata.lock"
#: the NIC fields machine_update_nics may change (NicFlagsSchema)
NIC_FLAG_FIELDS = ("allow_ip_spoofing", "allow_mac_spoofing", "allow_dhcp_spoofing",
                   "allow_restricted_traffic", "allowed_ips")


class MachineRecords:
    def __init__(self, machines_dir: Path, server_uuid: str) -> None:
        self.dir = machines_dir
        self.server_uuid = server_uuid
        machines_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._machine_locks: dict[str, threading.Lock] = {}
        self._records: dict[str, dict[str, Any]] = self._load_all()
        self._provisioning: set[str] = set()

    def bundle(self, uuid: str) -> Path:
        return self.dir / plain_name(uuid, "machine uuid")

    def find(self, uuid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(uuid)
        return dict(record) if record is not None else None

    def get(self, uuid: str) -> dict[str, Any]:
        record = self.find(plain_name(uuid, "machine uuid"))
        if record is None:
            raise MachineNotFound(f"machine {uuid} does not exist on server {self.server_uuid}")
        return record

    def all(self) -> list[dict[str, Any]]:
        """Every record (copies), oldest first."""
        with self._lock:
            records = [dict(r) for r in self._records.values()]
        return sorted(records, key=lambda r: r["created_at"])

    def provisioning(self) -> set[str]:
        with self._lock:
            return set(self._provisioning)

    @contextlib.contextmanager
    def provisioning_of(self, uuid: str) -> Iterator[None]:
        with self._lock:
            self._provisioning.add(uuid)
        try:
            yield
        finally:
            with self._lock:
                self._provisioning.discard(uuid)

    def save(self, record: dict[str, Any]) -> None:
        write_json(self.bundle(record["uuid"]) / RECORD_FILE, record)
        with self._lock:
            self._records[record["uuid"]] = dict(record)

    def save_new(self, record: dict[str, Any], spec: dict[str, Any]) -> None:
        """A new machine's record, and its metadata from the spec."""
        self.save(record)
        self.save_metadata(record["uuid"], {
            "tags": dict(spec.get("tags") or {}),
            "customer_metadata": dict(spec.get("metadata") or {})})

    def forget(self, uuid: str) -> None:
        """The record, the metadata and the bundle directory go."""
        shutil.rmtree(self.bundle(uuid), ignore_errors=True)
        with self._lock:
            self._records.pop(uuid, None)

    def save_metadata(self, uuid: str, meta: dict[str, Any]) -> None:
        """Write ``meta`` ({tags, customer_metadata}) as it is; serial 0 if it has none (a
        create)."""
        write_json(self.bundle(uuid) / METADATA_FILE, {"serial": 0, **meta})

    def read_metadata(self, record: dict[str, Any]) -> dict[str, Any]:
        """{tags, customer_metadata, serial} of the machine."""
        path = self.bundle(record["uuid"]) / METADATA_FILE
        if path.exists():
            meta = dict(json.loads(path.read_text()))
        else:  # made by an agent that kept them in machine.json
            meta = {"tags": dict(record.get("tags") or {}),
                    "customer_metadata": dict(record.get("metadata") or {})}
        meta.setdefault("serial", 0)  # written by an agent that kept no serial
        return meta

    def change_metadata(self, uuid: str,
                        changes: dict[str, tuple[list[str], dict[str, Any]]]
                        ) -> tuple[dict[str, Any], bool]:
        """Apply ``{kind: (remove, set)}`` (kind ``tags`` or ``customer_metadata``) under the
        metadata lock; the serial goes up by one only if a map changed, so a redelivered
        task or the same PUT again is no new change. Answers (the metadata after, whether
        it changed)."""
        with self.metadata_lock(uuid):
            meta = self.read_metadata(self.get(uuid))
            changed = False
            for kind, (remove, set_) in changes.items():
                before = dict(meta.get(kind) or {})
                meta[kind] = apply_metadata_change(before, remove, set_)
                changed = changed or meta[kind] != before
            if changed:
                meta["serial"] += 1
                self.save_metadata(uuid, meta)
            return meta, changed

    @contextlib.contextmanager
    def metadata_lock(self, uuid: str) -> Iterator[None]:
        """One change of ``metadata.json`` at a time, whether from the head node or the
        machine's own metadata socket; not the machine's lock, which a stop holds while the
        guest, shutting down, may still PUT. MachineNotFound for a machine the node lacks."""
        self.get(uuid)
        with file_lock(self.bundle(uuid) / METADATA_LOCK_FILE):
            yield

    @contextlib.contextmanager
    def machine(self, uuid: str) -> Iterator[None]:
        """One operation at a time on a machine (every operation starts here: a uuid that is
        not a plain name is refused before anything is touched)."""
        plain_name(uuid, "machine uuid")
        with self._lock:
            lock = self._machine_locks.setdefault(uuid, threading.Lock())
        with lock:
            yield

    @contextlib.contextmanager
    def machine_if_idle(self, uuid: str) -> Iterator[bool]:
        """The machine's lock if no operation holds it; yields whether it got it."""
        with self._lock:
            lock = self._machine_locks.setdefault(uuid, threading.Lock())
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()

    def _load_all(self) -> dict[str, dict[str, Any]]:
        records = {}
        for path in self.dir.glob(f"*/{RECORD_FILE}"):
            record = json.loads(path.read_text())
            records[record["uuid"]] = record
        return records


def machine_record(spec: dict[str, Any]) -> dict[str, Any]:
    """The record of a machine a MachineSpecSchema dict describes, not complete yet."""
    return {
        "uuid": spec["uuid"], "alias": spec["alias"], "owner_uuid": spec["owner_uuid"],
        "image_uuid": spec["image_uuid"], "ram_mb": spec["ram_mb"],
        "disk_mb": spec["disk_mb"], "cpu_cap": spec["cpu_cap"], "vcpus": spec["vcpus"],
        "max_lwps": spec["max_lwps"], "created_at": time.time(), "complete": False,
        "nics": [dict(n) for n in spec.get("nics") or []],
        "resolvers": list(spec.get("resolvers") or []),
        "routes": dict(spec.get("routes") or {}),
        "init": dict(spec["init"]) if spec.get("init") else None,
    }


def describe(record: dict[str, Any], *, running: bool, boot_time: float | None,
             disk_used_bytes: int, provisioning: bool) -> dict[str, Any]:
    """The MachineStatus of a record and what runc says of its container."""
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
        "disk_used_mb": math.ceil(disk_used_bytes / MIB),
        "boot_time": boot_time if running else None,
        "nics": nic_refs(record),
    }


def destroyed(record: dict[str, Any]) -> dict[str, Any]:
    return {**describe(record, running=False, boot_time=None, disk_used_bytes=0,
                       provisioning=False), "state": "destroyed", "nics": []}


def nic_refs(record: dict[str, Any]) -> list[dict[str, str]]:
    """``[{mac, interface}]`` of the record's NICs, in interface order (net2 before net10)."""
    nics = sorted(record.get("nics") or [], key=lambda n: int(n["interface"][3:]))
    return [{"mac": n["mac"], "interface": n["interface"]} for n in nics]


def nic_macs(record: dict[str, Any]) -> list[str]:
    return [n["mac"] for n in record.get("nics") or []]


def new_nics(record: dict[str, Any], nics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The NICs of ``nics`` the record lacks (by MAC): adding one twice is a no-op."""
    known = set(nic_macs(record))
    return [dict(n) for n in nics if n["mac"] not in known]


def updated_nics(record: dict[str, Any], changes: list[dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every NIC of the record with ``changes`` merged in, the changed NICs whole); a None
    field stays as it is. ``NicNotFound`` (nothing changed) for a MAC the record lacks."""
    nics = {n["mac"]: dict(n) for n in record.get("nics") or []}
    missing = [c["mac"] for c in changes if c["mac"] not in nics]
    if missing:
        raise BackendError("NicNotFound",
                           f"machine {record['uuid']} has no NIC {', '.join(missing)}")
    for change in changes:
        nics[change["mac"]].update({k: change[k] for k in NIC_FLAG_FIELDS
                                    if change.get(k) is not None})
    return list(nics.values()), [nics[c["mac"]] for c in changes]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    # flock, not a threading lock: two agent processes on one pool import an image once too
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
