"""A SmartOS node's side of moving a machine between nodes (schemas/migrations.py), as
Triton's cn-agent does it, by argument lists:

- the target's copy is ``vmadm create`` of the machine's payload with ``do_not_inventory``
  (hidden from inventory: left out of the node's reports) and ``autoboot: false``;
- a sync is ``zfs snapshot zones/<uuid>@migration-N`` and ``zfs send [-I @migration-M]
  zones/<uuid>@migration-N`` on the source, streamed as zfs writes it into the target's
  ``zfs receive -u -s -F -x encryption zones/<uuid>`` (not mounted; ``-s``: a cut stream
  leaves a ``receive_resume_token``, and the target's next offer carries it so that the
  source sends the rest with ``zfs send -t TOKEN``; ``-F``: the dataset rolls back to its
  last snapshot first; ``-x encryption``: an unencrypted source lands on an encrypted pool).
  The first full stream replaces the dataset vmadm made (``zfs destroy -f -r`` of it first,
  as cn-agent does: a full stream cannot land on a clone of the image); the received one
  has no quota until activation sets the machine's back;
- hide and show are ``vmadm update`` of ``do_not_inventory`` (hidden: ``autoboot`` off too,
  so a node's boot does not start it); activation shows the copy with its quota back;
- cleanup is ``zfs destroy`` of the machine's migration snapshots.

Sizes for progress come from ``zfs send -nP`` (a dry run that prints the stream's size).
What the target keeps between prepare and activation (the migration and the zone's quota) is
a small file in the agent's work directory.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from agents import migration_stream
from agents.backends.base import BackendError, InsufficientResources
from agents.backends.host import vmadm, zfs
from agents.backends.host.cmd import HostCommandError, run, stream_from, stream_into
from agents.backends.jsonfile import write_json
from agents.backends.migration_progress import CountedBody, ProgressReporter, ProgressSink
from agents.backends.names import plain_name
from agents.backends.smartos_snapshots import ZPOOL
from agents.backends.ttlcache import TtlCache

ZFS = "zfs"
#: how long an offered stream waits for its source (seconds)
RECEIVE_TTL = 120.0
#: where the target keeps its prepared copies' facts (in the agent's work directory)
RECORDS_DIR = "migrations"
#: what zfs says when a fresh stream meets a cut receive's saved state
PARTIAL_STATE = "partially-complete state"
#: what zfs says when the pool (or a quota) has no room for a receive
OUT_OF_SPACE = ("out of space", "quota exceeded", "No space left")


def dataset(uuid: str) -> str:
    return f"{ZPOOL}/{plain_name(uuid, 'machine uuid')}"


def snapshot_name(uuid: str, name: str) -> str:
    return f"{dataset(uuid)}@{plain_name(name, 'snapshot name')}"


def send_argv(uuid: str, snapshot: str, parent: str | None, resume_token: str | None,
              *, dry_run: bool = False) -> list[str]:
    """``zfs send``: the rest of a cut stream (``-t``), else an increment from ``parent``
    (``-I @parent``: every snapshot between them too), else the full stream; ``-nP`` (a
    dry run printing its size) when ``dry_run``."""
    head = [ZFS, "send", *(["-n", "-P"] if dry_run else [])]
    if resume_token:
        return [*head, "-t", resume_token]
    increment = ["-I", f"@{plain_name(parent, 'parent snapshot')}"] if parent else []
    return [*head, *increment, snapshot_name(uuid, snapshot)]


def receive_argv(uuid: str) -> list[str]:
    return [ZFS, "receive", "-u", "-s", "-F", "-x", "encryption", dataset(uuid)]


def resume_token(uuid: str) -> str | None:
    """The ``receive_resume_token`` a cut receive left on the dataset, None without one."""
    out = run([ZFS, "get", "-H", "-o", "value", "receive_resume_token", dataset(uuid)]).strip()
    return None if out in ("", "-") else out


def migration_snapshots(uuid: str) -> list[str]:
    """The dataset's migration snapshots (names after the @), oldest first; none when the
    dataset is gone."""
    try:
        out = run([ZFS, "list", "-Hp", "-t", "snapshot", "-o", "name", "-s", "createtxg",
                   "-d", "1", dataset(uuid)])
    except HostCommandError as exc:
        if "does not exist" in exc.stderr:
            return []
        raise
    names = [line.split("@", 1)[1] for line in out.splitlines() if "@" in line]
    return [name for name in names if name.startswith("migration-")]


def stream_size(argv: list[str]) -> int | None:
    """The ``size`` line of ``zfs send -nP``'s answer (None if it has none)."""
    for line in run(argv).splitlines():
        fields = line.split("\t")
        if fields[0] == "size" and len(fields) == 2 and fields[1].isdigit():
            return int(fields[1])
    return None


class SmartOSMigrations:
    """The six migration operations of :class:`agents.backends.smartos.SmartOSBackend`."""

    server_uuid: str
    work_dir: Path
    brand: str
    _cache: TtlCache
    _progress: ProgressSink | None

    def machine_load(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def _vm(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def _payload(self, spec: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # -- the target ---------------------------------------------------------------------------

    def migration_target_prepare(self, migration_uuid: str,
                                 spec: dict[str, Any]) -> dict[str, Any]:
        uuid = spec["uuid"]
        if vmadm.get(uuid) is not None:
            return self.machine_load(uuid)
        payload = {**self._payload(spec), "do_not_inventory": True, "autoboot": False}
        self._write_record(uuid, {"migration_uuid": migration_uuid, "quota": payload["quota"]})
        try:
            vmadm.create(payload)
        finally:
            self._cache.forget("vms", "usage", "pool", "nics")
        return self.machine_load(uuid)

    def migration_receive(self, params: dict[str, Any]) -> dict[str, Any]:
        uuid = params["uuid"]
        self._prepared(uuid, params["migration_uuid"])
        have = migration_snapshots(uuid)
        if params["parent"] and params["snapshot"] not in have and params["parent"] not in have:
            raise BackendError("SnapshotNotFound",
                               f"machine {uuid} has not received {params['parent']}, the "
                               f"parent of {params['snapshot']}")
        token = resume_token(uuid)
        url = migration_stream.offer(params["token"],
                                     functools.partial(self._receive_stream, params,
                                                       token is not None),
                                     ttl=RECEIVE_TTL)
        return {"url": url, "expires_at": time.time() + RECEIVE_TTL, "resume_token": token}

    def migration_activate(self, uuid: str, migration_uuid: str,
                           snapshot: str) -> dict[str, Any]:
        record = self._read_record(uuid)
        if record is None and not self._vm(uuid).get("do_not_inventory"):
            return self.machine_load(uuid)  # a redelivered activate: done before
        record = self._prepared(uuid, migration_uuid)
        if snapshot not in migration_snapshots(uuid):
            raise BackendError("SnapshotNotFound", f"machine {uuid} on server "
                                                   f"{self.server_uuid} has not received "
                                                   f"{snapshot}")
        try:
            vmadm.update(uuid, {"do_not_inventory": False, "quota": record["quota"]})
        finally:
            self._cache.forget("vms", "usage")
        self._record_path(uuid).unlink(missing_ok=True)
        return self.machine_load(uuid)

    # -- the source ---------------------------------------------------------------------------

    def migration_send(self, params: dict[str, Any]) -> dict[str, Any]:
        uuid, name, parent = params["uuid"], params["snapshot"], params["parent"]
        self._vm(uuid)
        token = params.get("resume_token")
        if not token:
            if parent and parent not in migration_snapshots(uuid):
                raise BackendError("SnapshotNotFound",
                                   f"machine {uuid} has no migration snapshot {parent} to "
                                   f"send an increment from")
            if not zfs.exists(snapshot_name(uuid, name)):
                zfs.snapshot(snapshot_name(uuid, name))
        total = stream_size(send_argv(uuid, name, parent, token, dry_run=True))
        report = ProgressReporter(self._progress, _event_fields(self.server_uuid, params,
                                                                "send", total))
        sent = [0]

        def progress(nbytes: int) -> None:
            sent[0] = nbytes
            report(nbytes)

        started = time.monotonic()
        # closed at once when the target answered early (it had the snapshot, it failed): a
        # zfs send nobody reads would wait on its pipe
        with contextlib.closing(stream_from(send_argv(uuid, name, parent, token))) as chunks:
            answer = migration_stream.send_stream(params["url"], params["token"], chunks,
                                                  progress)
        seconds = time.monotonic() - started
        report(sent[0], done=True)
        return {"snapshot": name, "parent": parent, "bytes": sent[0],
                "seconds": round(seconds, 3), "received_bytes": int(answer.get("bytes", 0))}

    # -- either end ---------------------------------------------------------------------------

    def migration_hide(self, uuid: str, hidden: bool) -> dict[str, Any]:
        """Hidden: out of inventory, and not started by the node's boot (autoboot off); shown:
        in inventory again (starting the machine turns autoboot back on, as vmadm start
        does). A running machine is not hidden: stop it first."""
        vm = self._vm(uuid)
        if hidden and vm.get("state") not in ("stopped", "installed", "down"):
            raise BackendError("InvalidState", f"machine {uuid} is {vm.get('state')} on server "
                                               f"{self.server_uuid}: stop it before hiding it")
        try:
            vmadm.update(uuid, {"do_not_inventory": True, "autoboot": False} if hidden
                         else {"do_not_inventory": False})
        finally:
            self._cache.forget("vms")
        return self.machine_load(uuid)

    def migration_cleanup(self, uuid: str, migration_uuid: str,
                          keep: str | None) -> list[str]:
        gone = [name for name in migration_snapshots(uuid) if name != keep]
        for name in gone:
            zfs.destroy(snapshot_name(uuid, name))
        if gone:
            self._cache.forget("usage", "pool")
        return gone

    # -- the stream ---------------------------------------------------------------------------

    def _receive_stream(self, params: Mapping[str, Any], resuming: bool,
                        body: IO[bytes]) -> dict[str, Any]:
        """The target's end of one stream (run by the stream listener); ``resuming``: the
        offer named a cut receive's token, the stream is the rest of it."""
        uuid = params["uuid"]
        self._prepared(uuid, params["migration_uuid"])  # the copy may have gone meanwhile
        if params["snapshot"] in migration_snapshots(uuid):
            return {"bytes": 0}  # received before: a redelivered sync
        if params["parent"] is None and not resuming and zfs.exists(dataset(uuid)):
            # a full stream makes the dataset anew: vmadm's (a clone of the image) goes
            run([ZFS, "destroy", "-f", "-r", dataset(uuid)])
        report = ProgressReporter(self._progress, _event_fields(self.server_uuid, params,
                                                                "receive", None))
        counted = CountedBody(body, report)
        try:
            stream_into(receive_argv(uuid), counted)
        except HostCommandError as exc:
            failure = self._receive_failed(uuid, exc)
            report.failed(counted.bytes, failure)
            raise failure from exc
        except Exception as exc:  # a cut stream (its sender died): said, then raised
            report.failed(counted.bytes, exc)
            raise
        finally:
            self._cache.forget("usage", "pool")
        report(counted.bytes, done=True)
        return {"bytes": counted.bytes}

    def _receive_failed(self, uuid: str, exc: HostCommandError) -> BackendError:
        if any(words in exc.stderr for words in OUT_OF_SPACE):
            return InsufficientResources(f"pool {ZPOOL} of server {self.server_uuid} has no "
                                         f"room for the stream of {uuid}: {exc.stderr}")
        if PARTIAL_STATE in exc.stderr:
            # a whole stream came where a cut one was to be resumed (the source was not
            # told the token): drop the saved part, so that the next sync starts afresh
            run([ZFS, "receive", "-A", dataset(uuid)])
            return BackendError("MigrationResumeDropped",
                                f"machine {uuid}: a cut receive was waiting to be resumed "
                                f"and a new stream came; its saved part is dropped")
        return exc

    # -- what the target keeps ----------------------------------------------------------------

    def _prepared(self, uuid: str, migration_uuid: str) -> dict[str, Any]:
        """The record of this migration's hidden copy; a stream never goes into a zone that
        is not one (a machine in use, another migration's copy)."""
        record = self._read_record(uuid)
        if record is None or record.get("migration_uuid") != migration_uuid or \
                not self._vm(uuid).get("do_not_inventory"):
            raise BackendError("MigrationNotPrepared",
                               f"machine {uuid} on server {self.server_uuid} is no hidden copy "
                               f"of migration {migration_uuid}")
        return record

    def _record_path(self, uuid: str) -> Path:
        return self.work_dir / RECORDS_DIR / f"{plain_name(uuid, 'machine uuid')}.json"

    def _read_record(self, uuid: str) -> dict[str, Any] | None:
        try:
            record: dict[str, Any] = json.loads(self._record_path(uuid).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return record

    def _write_record(self, uuid: str, record: dict[str, Any]) -> None:
        write_json(self._record_path(uuid), record)

    def _forget_migration(self, uuid: str) -> None:
        """A destroyed machine leaves no record."""
        self._record_path(uuid).unlink(missing_ok=True)


def _event_fields(server_uuid: str, params: Mapping[str, Any], side: str,
                  total: int | None) -> dict[str, Any]:
    return {"migration_uuid": params["migration_uuid"], "server_uuid": server_uuid,
            "machine_uuid": params["uuid"], "side": side, "snapshot": params["snapshot"],
            "total": total}
