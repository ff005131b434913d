"""A Linux node's side of moving a machine between nodes (the contract: schemas/migrations.py),
on a btrfs pool (the layout: :mod:`~agents.backends.linux.storage`).

- **Source**: each sync takes a read-only snapshot of the machine's root as
  ``migrations/<machine>/<migration>/migration-N`` (apart from the user's snapshots, which
  ``snapshot_list`` shows) and pipes ``btrfs send [-p PARENT]`` of it into the target's stream
  (:mod:`agents.migration_stream`). A ``btrfs send`` that fails never ends its stream, so the
  target never takes a short stream for a whole one.
- **Target**: :meth:`migration_target_prepare` writes the machine's record (NICs, limits,
  metadata, as a create would) with ``hidden: true`` and the migration it waits for
  (``migration_target``), without a root. Each stream runs ``btrfs receive`` into the
  migration's directory, and a failed or cut receive deletes what it made (btrfs cannot
  resume one; the head node sends the stream again). A snapshot counts as received once it
  is in the copy's *ledger* (:data:`RECEIVED`), written after ``btrfs receive`` exited 0 on
  a stream that ended well, not because a subvolume is read-only (btrfs-progs 6.2 refuses a
  stream cut at a command boundary, "unexpected EOF in stream"; the ledger does not rely on
  every version doing so); one the ledger lacks (its agent died during the receive) is
  deleted when the next agent starts. A full pool is ``InsufficientResources``
  naming it. A snapshot received already is answered at once (a redelivered task). At
  switch, :meth:`migration_activate` makes the machine's root a writable snapshot of the
  received one with the machine's disk quota, and shows it.
- **Metadata**: a machine's tags and customer metadata live beside its root, not in it
  (``metadata.json``, with its change ``serial``), so a stream starts with them (an
  *envelope*: :data:`ENVELOPE_MAGIC`, a 4-byte big-endian length, the JSON), and the
  activation installs those of the snapshot it activates: the guest finds the maps it left
  at the last sync (the switch's, after the stop), and the serial goes on from the source's
  (the head node ignores a map whose serial is not newer than the last it applied).
- **Clean-up** (``migration_cleanup``) removes the machine's migration snapshots but
  ``keep`` and those newer than it: a later sync's, whose stream may be running (the head
  node sends a clean-up without waiting for it). ``keep`` None removes them all.
- **Hidden** machines are left out of ``list_machines`` and status reports and are never
  booted (a start is refused); a running machine cannot be hidden. ``machine_destroy``
  removes a machine's migration snapshots with it.

Both ends send ``events.migration_progress`` at most once a second and at the end.
"""

from __future__ import annotations

import functools
import itertools
import json
import struct
import time
from pathlib import Path
from typing import Any, BinaryIO

from agents import migration_stream
from agents.backends.base import BackendError, InsufficientResources, MachineNotFound
from agents.backends.host import btrfs, cmd
from agents.backends.host.cmd import HostCommandError
from agents.backends.jsonfile import write_json
from agents.backends.linux.records import MachineRecords, machine_record
from agents.backends.linux.runtime import Runtime
from agents.backends.linux.storage import BtrfsStorage, Storage
from agents.backends.migration_progress import ProgressReporter, ProgressSink

MIB = 1024 * 1024
#: how long an offered stream waits for its source (seconds)
RECEIVE_TTL = 120.0
ENVELOPE_MAGIC = b"SDCM"
MAX_ENVELOPE = 16 * MIB
#: in a target copy's bundle, its ledger: ``{"migration_uuid", "snapshots": {name: the
#: metadata that came with it}}`` of the snapshots received whole
RECEIVED = "migration-received.json"


def send_argv(snapshot: Path, parent: Path | None) -> list[str]:
    return [btrfs.BTRFS, "send", "-q", *(["-p", str(parent)] if parent else []), str(snapshot)]


def receive_argv(directory: Path) -> list[str]:
    return [btrfs.BTRFS, "receive", str(directory)]


class LinuxMigrations:
    """The six migration operations of :class:`agents.backends.linux.LinuxBackend`."""

    # the node, set up by LinuxBackend
    server_uuid: str
    storage: Storage
    records: MachineRecords
    runtime: Runtime
    migration_progress: ProgressSink | None

    def _load(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def _invalidate_usage(self) -> None:
        raise NotImplementedError

    # -- the operations -------------------------------------------------------------------

    def migration_target_prepare(self, migration_uuid: str,
                                 spec: dict[str, Any]) -> dict[str, Any]:
        self._btrfs()
        uuid = spec["uuid"]
        with self.records.machine(uuid):
            if self.records.find(uuid) is None:
                record = {**machine_record(spec), "complete": True, "hidden": True,
                          "migration_target": migration_uuid}
                self.records.save_new(record, spec)
            return self._load(uuid)

    def migration_receive(self, params: dict[str, Any]) -> dict[str, Any]:
        uuid = params["uuid"]
        with self.records.machine(uuid):
            self._target_record(uuid, params["migration_uuid"])
            self._received(params, params["parent"], "parent")
        url = migration_stream.offer(params["token"],
                                     functools.partial(self._receive_stream, dict(params)),
                                     ttl=RECEIVE_TTL)
        return {"url": url, "expires_at": time.time() + RECEIVE_TTL}

    def migration_send(self, params: dict[str, Any]) -> dict[str, Any]:
        migration_stream.check_url(params["url"])  # before anything is made
        storage = self._btrfs()
        uuid, migration_uuid = params["uuid"], params["migration_uuid"]
        name, parent = params["snapshot"], params["parent"]
        with self.records.machine(uuid):
            self.records.get(uuid)
            snapshot = storage.migration_snapshot(uuid, migration_uuid, name)
            base = storage.migration_snapshot(uuid, migration_uuid, parent) if parent else None
            if base is not None and not base.is_dir():
                raise BackendError("SnapshotNotFound", f"machine {uuid} has no migration "
                                   f"snapshot {parent} to send an increment from")
            if not snapshot.is_dir():
                storage.migration_snapshot_create(uuid, migration_uuid, name)
        report = self._reporter(params, "send")
        sent = [0]

        def progress(nbytes: int) -> None:
            sent[0] = nbytes
            report(nbytes)

        with self.records.metadata_lock(uuid):
            meta = self.records.read_metadata(self.records.get(uuid))
        started = time.monotonic()
        chunks = cmd.stream_from(send_argv(snapshot, base))
        try:
            answer = migration_stream.send_stream(
                params["url"], params["token"], itertools.chain([envelope(meta)], chunks),
                progress)
        finally:
            # a target that answered early: the send is not needed any more
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        seconds = time.monotonic() - started
        report(sent[0], done=True)
        return {"snapshot": name, "parent": parent, "bytes": sent[0],
                "seconds": round(seconds, 3), "received_bytes": int(answer.get("bytes", 0))}

    def migration_activate(self, uuid: str, migration_uuid: str,
                           snapshot: str) -> dict[str, Any]:
        storage = self._btrfs()
        activated = {"migration_uuid": migration_uuid, "snapshot": snapshot}
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            if record.get("activated") == activated and not record.get("hidden"):
                return self._load(uuid)  # a redelivered activate: it may run by now
            self._target_record(uuid, migration_uuid)
            self._received({"uuid": uuid, "migration_uuid": migration_uuid}, snapshot,
                           "snapshot")
            storage.migration_activate(uuid, migration_uuid, snapshot, record["disk_mb"] * MIB)
            self._install_metadata(uuid, migration_uuid, snapshot)
            self.records.save({**record, "hidden": False, "activated": activated})
            self._invalidate_usage()
            return self._load(uuid)

    def migration_hide(self, uuid: str, hidden: bool) -> dict[str, Any]:
        with self.records.machine(uuid):
            record = self.records.get(uuid)
            if hidden and self.runtime.is_running(uuid):
                raise BackendError("InvalidState", f"machine {uuid} is running on server "
                                   f"{self.server_uuid}: stop it before hiding it")
            if not hidden and not self.storage.machine_root(uuid).is_dir():
                raise BackendError("InvalidState", f"machine {uuid} on server "
                                   f"{self.server_uuid} has no root yet (activate it)")
            if bool(record.get("hidden")) != hidden:
                self.records.save({**record, "hidden": hidden})
            self._invalidate_usage()
            return self._load(uuid)

    def migration_cleanup(self, uuid: str, migration_uuid: str,
                          keep: str | None) -> list[str]:
        storage = self._btrfs()
        with self.records.machine(uuid):
            kept = storage.migration_snapshot(uuid, migration_uuid, keep) if keep else None
            removed, ids = storage.migration_cleanup(uuid, kept)
        # not under the machine's lock: the cleaner may take long (it frees every deleted
        # subvolume of the pool in turn), and the next sync's receive must not wait for it
        storage.wait_deleted(ids)
        self._invalidate_usage()
        return removed

    # -- for the machine operations --------------------------------------------------------

    @staticmethod
    def shown(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if not r.get("hidden")]

    def check_bootable(self, record: dict[str, Any]) -> None:
        if record.get("hidden"):
            raise BackendError("InvalidState", f"machine {record['uuid']} is hidden on server "
                               f"{self.server_uuid} (a migration's other copy): show it first")

    # -- the receiving end ----------------------------------------------------------------

    def _receive_stream(self, params: dict[str, Any], body: BinaryIO) -> dict[str, Any]:
        """The handler of one offered stream: ``btrfs receive`` it, or answer at once for a
        snapshot received already."""
        storage = self._btrfs()
        uuid, migration_uuid, name = params["uuid"], params["migration_uuid"], params["snapshot"]
        with self.records.machine(uuid):
            self._target_record(uuid, migration_uuid)
            if self._has_received(uuid, migration_uuid, name):
                return {"bytes": 0, "snapshot": name, "received_before": True}
            self._received(params, params["parent"], "parent")
            report = self._reporter(params, "receive")
            counted = _Counted(body, report)
            receiving = storage.migration_receiving(uuid, migration_uuid, name)
            try:
                meta = read_envelope(counted)
                cmd.stream_into(receive_argv(receiving), counted)
                if not storage.migration_received(uuid, migration_uuid, name):
                    raise BackendError("MigrationStreamInvalid", f"the stream for machine "
                                       f"{uuid} did not hold {name}")
                self._enter(uuid, migration_uuid, name, meta)
            except BaseException as exc:
                storage.migration_discard(uuid, migration_uuid, name)
                said = self._receive_error(exc, uuid, name)
                report.failed(counted.bytes, said)
                if said is exc:
                    raise
                raise said from exc
            finally:
                self._invalidate_usage()
            report(counted.bytes, done=True)
            return {"bytes": counted.bytes, "snapshot": name}

    def _ledger(self, uuid: str, migration_uuid: str) -> dict[str, Any]:
        """{snapshot: its metadata} of the snapshots this migration received whole."""
        path = self.records.bundle(uuid) / RECEIVED
        kept = json.loads(path.read_text()) if path.exists() else {}
        same = kept.get("migration_uuid") == migration_uuid
        return dict(kept.get("snapshots") or {}) if same else {}

    def _enter(self, uuid: str, migration_uuid: str, name: str, meta: dict[str, Any]) -> None:
        snapshots = {**self._ledger(uuid, migration_uuid), name: meta}
        write_json(self.records.bundle(uuid) / RECEIVED,
                   {"migration_uuid": migration_uuid, "snapshots": snapshots})

    def _has_received(self, uuid: str, migration_uuid: str, name: str) -> bool:
        return name in self._ledger(uuid, migration_uuid) and \
            self._btrfs().migration_received(uuid, migration_uuid, name)

    def _install_metadata(self, uuid: str, migration_uuid: str, name: str) -> None:
        meta = self._ledger(uuid, migration_uuid).get(name)
        if meta is not None:
            with self.records.metadata_lock(uuid):
                self.records.save_metadata(uuid, meta)

    def drop_unfinished_receives(self) -> None:
        """Delete the received snapshots of hidden copies that their ledger lacks: receives
        an agent did not see end (called when the agent starts)."""
        if not isinstance(self.storage, BtrfsStorage):
            return
        for record in self.records.all():
            migration_uuid = record.get("migration_target")
            if not migration_uuid or not record.get("hidden"):
                continue
            ledger = self._ledger(record["uuid"], migration_uuid)
            for path in self.storage.migration_snapshots(record["uuid"], migration_uuid):
                if path.name not in ledger:
                    self.storage.migration_discard(record["uuid"], migration_uuid, path.name)

    def _receive_error(self, exc: BaseException, uuid: str, name: str) -> BaseException:
        said = " ".join(exc.stderr.split()) if isinstance(exc, HostCommandError) else ""
        if "No space left" in said:
            return InsufficientResources(f"pool {self._btrfs().pool} of server "
                                         f"{self.server_uuid} is full: receiving {name} of "
                                         f"machine {uuid} failed ({said})")
        return exc

    def _target_record(self, uuid: str, migration_uuid: str) -> dict[str, Any]:
        """The hidden copy this migration prepared on this node, or BackendError."""
        record = self.records.find(uuid)
        if record is None:
            raise MachineNotFound(f"machine {uuid} has no migration copy on server "
                                  f"{self.server_uuid}")
        if record.get("migration_target") != migration_uuid or not record.get("hidden"):
            raise BackendError("InvalidState", f"machine {uuid} on server {self.server_uuid} "
                               f"is not the hidden target of migration {migration_uuid}")
        return record

    def _received(self, params: dict[str, Any], name: str | None, what: str) -> None:
        """SnapshotNotFound unless ``name`` (if any) was received for this migration."""
        if name is None:
            return
        uuid = params["uuid"]
        if not self._has_received(uuid, params["migration_uuid"], name):
            raise BackendError("SnapshotNotFound", f"machine {uuid} on server "
                               f"{self.server_uuid} has not received the {what} {name}")

    def _reporter(self, params: dict[str, Any], side: str) -> ProgressReporter:
        return ProgressReporter(self.migration_progress, {
            "migration_uuid": params["migration_uuid"], "server_uuid": self.server_uuid,
            "machine_uuid": params["uuid"], "side": side, "snapshot": params["snapshot"],
            "total": None})

    def _btrfs(self) -> BtrfsStorage:
        if not isinstance(self.storage, BtrfsStorage):
            raise BackendError("Unsupported", f"server {self.server_uuid}: machines migrate "
                               "only between btrfs pools (SDC_STORAGE=btrfs)")
        return self.storage


def envelope(meta: dict[str, Any]) -> bytes:
    data = json.dumps(meta).encode()
    return ENVELOPE_MAGIC + struct.pack(">I", len(data)) + data


def read_envelope(body: cmd.Readable) -> dict[str, Any]:
    """The metadata at the head of a stream; BackendError ``MigrationStreamInvalid`` for a
    stream without it."""
    head = _read_exactly(body, len(ENVELOPE_MAGIC) + 4)
    (length,) = struct.unpack(">I", head[len(ENVELOPE_MAGIC):])
    if not head.startswith(ENVELOPE_MAGIC) or length > MAX_ENVELOPE:
        raise BackendError("MigrationStreamInvalid", "the stream does not start with the "
                           "machine's metadata (is the source a Linux node?)")
    try:
        meta = json.loads(_read_exactly(body, length))
    except ValueError as exc:
        raise BackendError("MigrationStreamInvalid", f"the stream's metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise BackendError("MigrationStreamInvalid", "the stream's metadata is no object")
    return meta


def _read_exactly(body: cmd.Readable, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = body.read(size - len(data))
        if not piece:
            raise migration_stream.StreamCut("the stream ended in its metadata")
        data += piece
    return data


class _Counted:
    """A stream's body, counted and reported as it is read."""

    def __init__(self, body: BinaryIO, report: ProgressReporter) -> None:
        self._body = body
        self._report = report
        self.bytes = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._body.read(size)
        self.bytes += len(data)
        self._report(self.bytes)
        return data
