"""A sim node's side of moving a machine between nodes (the contract: schemas/migrations.py).

Nothing is copied, but everything else is as on a real node: the target's copy is a hidden
machine record that holds its room, the stream goes node to node through the real
:mod:`agents.migration_stream` (one-time token, a POST from the source to the target), and
it takes the time a real one would. A stream's size is simulated: a full send is the
machine's disk times ``migration_fill`` (SDC_SIM_MIGRATION_FILL, the share of a disk a
machine has written), an increment a tenth of that when the machine ran since its parent
snapshot (a stopped machine writes nothing); it runs at ``transfer_mbps``
(SDC_SIM_TRANSFER_MBPS). The source sends blanks over that time, then the JSON body
``{"bytes", "snapshot"}``; the target records the snapshot and answers ``{"bytes"}``.

Fault injection (``agent.sim_faults``) takes the six operation names, and
``migration_stream``: the target refuses a stream once its bytes arrived (a full pool, a
cut receive).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any

from agents import migration_stream
from agents.backends import simroom as room
from agents.backends.base import BackendError
from agents.backends.migration_progress import ProgressReporter, ProgressSink
from agents.backends.simfaults import Faults

MIGRATION_OPS = ("migration_target_prepare", "migration_receive", "migration_send",
                 "migration_activate", "migration_hide", "migration_cleanup",
                 "migration_stream")
#: how long an offered stream waits for its source (seconds)
RECEIVE_TTL = 120.0
#: an increment of a machine that ran since its parent: this share of a full stream
INCREMENT_SHARE = 0.1
#: the sender paces a stream in this many steps
PACE_STEPS = 10
#: the largest body a sim stream carries (the blanks of the pacing and a small JSON object)
MAX_BODY = 64 * 1024
MIB = 1024 * 1024

class SimMigrations:
    """The six migration operations of :class:`agents.backends.sim.SimBackend`, kept apart
    from its machine operations. Per machine, ``_migrations`` holds ``{"migration_uuid",
    "hidden", "sent": [...], "received": [...], "activated"}`` (kept in the node's state)."""

    # the node's state, set up by SimBackend
    server_uuid: str
    nic_tags: dict[str, str | None]
    ram_mb: int
    pool_size_mb: int
    migration_fill: float
    transfer_mbps: float
    _lock: threading.RLock
    _images: dict[str, dict[str, Any]]
    _machines: dict[str, dict[str, Any]]
    _migrations: dict[str, dict[str, Any]]
    _faults: Faults
    _progress: ProgressSink | None

    def _get(self, uuid: str) -> dict[str, Any]:
        raise NotImplementedError

    def _add_machine(self, spec: Mapping[str, Any], state: str) -> dict[str, Any]:
        raise NotImplementedError

    def _save_state(self) -> None:
        raise NotImplementedError

    # -- what the node shows --------------------------------------------------------------

    def _hidden(self, uuid: str) -> bool:
        return bool(self._migrations.get(uuid, {}).get("hidden"))

    def _shown_machines(self) -> list[dict[str, Any]]:
        return [dict(m) for m in self._machines.values() if not self._hidden(m["uuid"])]

    def _require_shown(self, uuid: str, action: str) -> None:
        """A hidden copy never boots: the machine runs where the head node has it."""
        if self._hidden(uuid):
            raise BackendError("InvalidState", f"cannot {action} machine {uuid}: it is hidden "
                                               f"on server {self.server_uuid} (a migration's "
                                               f"other copy)")

    # -- the operations -------------------------------------------------------------------

    def migration_target_prepare(self, migration_uuid: str,
                                 spec: dict[str, Any]) -> dict[str, Any]:
        """The hidden, stopped copy; it holds the machine's room (its root comes from the
        stream, so the image need not be here). One that exists is returned as it is."""
        self._faults.begin("migration_target_prepare")
        with self._lock:
            existing = self._machines.get(spec["uuid"])
            if existing is not None:
                return dict(existing)
            room.check_fits(spec, self._images, self._machines, self.ram_mb,
                            self.pool_size_mb, image_needed=False)
            self._migrations[spec["uuid"]] = {**_blank(), "migration_uuid": migration_uuid,
                                              "hidden": True}
            return dict(self._add_machine(spec, "stopped"))

    def migration_receive(self, params: dict[str, Any]) -> dict[str, Any]:
        self._faults.begin("migration_receive")
        with self._lock:
            self._check_receivable(params)
        url = migration_stream.offer(params["token"],
                                     functools.partial(self._receive_stream, params),
                                     ttl=RECEIVE_TTL)
        return {"url": url, "expires_at": time.time() + RECEIVE_TTL}

    def migration_send(self, params: dict[str, Any]) -> dict[str, Any]:
        self._faults.begin("migration_send")
        uuid, name, parent = params["uuid"], params["snapshot"], params["parent"]
        with self._lock:
            machine = self._get(uuid)
            sent = self._migrations.setdefault(uuid, _blank())["sent"]
            base = _find(sent, parent) if parent else None
            if parent and base is None:
                raise BackendError("SnapshotNotFound",
                                   f"machine {uuid} has no migration snapshot {parent} to send "
                                   f"an increment from")
            snapshot = _find(sent, name)
            if snapshot is None:
                snapshot = {"name": name, "at": time.time(),
                            "running": machine["state"] == "running"}
                sent.append(snapshot)
                self._save_state()
            size = self._stream_size(machine, snapshot, base)
        report = self._reporter(params, "send", size)
        started = time.monotonic()
        answer = migration_stream.send_stream(params["url"], params["token"],
                                              self._paced_body(name, size, report),
                                              lambda _sent: None)
        seconds = time.monotonic() - started
        report(size, done=True)
        return {"snapshot": name, "parent": parent, "bytes": size,
                "seconds": round(seconds, 3), "received_bytes": int(answer.get("bytes", 0))}

    def migration_activate(self, uuid: str, migration_uuid: str,
                           snapshot: str) -> dict[str, Any]:
        self._faults.begin("migration_activate")
        with self._lock:
            machine = self._get(uuid)
            state = self._migrations.get(uuid) or _blank()
            if state["activated"] == snapshot:
                return dict(machine)  # a redelivered activate: the machine may run by now
            if state["migration_uuid"] != migration_uuid or \
                    _find(state["received"], snapshot) is None:
                raise BackendError("SnapshotNotFound",
                                   f"machine {uuid} on server {self.server_uuid} has not "
                                   f"received {snapshot} of migration {migration_uuid}")
            state.update(hidden=False, activated=snapshot)
            machine.update(state="stopped", boot_time=None)
            self._save_state()
            return dict(machine)

    def migration_hide(self, uuid: str, hidden: bool) -> dict[str, Any]:
        self._faults.begin("migration_hide")
        with self._lock:
            machine = self._get(uuid)
            if hidden and machine["state"] != "stopped":
                raise BackendError("InvalidState", f"machine {uuid} is {machine['state']} on "
                                                   f"server {self.server_uuid}: stop it before "
                                                   f"hiding it")
            self._migrations.setdefault(uuid, _blank())["hidden"] = hidden
            self._forget_if_idle(uuid)
            self._save_state()
            return dict(machine)

    def migration_cleanup(self, uuid: str, migration_uuid: str,
                          keep: str | None) -> list[str]:
        """Both ends' snapshots (sent and received) but ``keep``; a machine this node no
        longer has has none left."""
        self._faults.begin("migration_cleanup")
        with self._lock:
            state = self._migrations.get(uuid)
            if state is None:
                return []
            removed = [s["name"] for s in state["sent"] + state["received"]
                       if s["name"] != keep]
            for kind in ("sent", "received"):
                state[kind] = [s for s in state[kind] if s["name"] == keep]
            self._forget_if_idle(uuid)
            self._save_state()
            return list(dict.fromkeys(removed))

    # -- the stream -----------------------------------------------------------------------

    def _check_receivable(self, params: Mapping[str, Any]) -> None:
        """A stream goes only into this migration's hidden copy, an increment only onto a
        snapshot received before."""
        uuid = params["uuid"]
        self._get(uuid)
        state = self._migrations.get(uuid) or _blank()
        if not state["hidden"] or state["migration_uuid"] != params["migration_uuid"]:
            raise BackendError("MigrationNotPrepared",
                               f"machine {uuid} on server {self.server_uuid} is no hidden copy "
                               f"of migration {params['migration_uuid']}")
        received = state["received"]
        if params["parent"] and _find(received, params["snapshot"]) is None and \
                _find(received, params["parent"]) is None:
            raise BackendError("SnapshotNotFound",
                               f"machine {uuid} has not received {params['parent']}, the "
                               f"parent of {params['snapshot']}")

    def _receive_stream(self, params: Mapping[str, Any], body: IO[bytes]) -> dict[str, Any]:
        """The target's end of one stream (run by the stream listener)."""
        try:
            data = _read_body(body)
        except Exception as exc:  # a cut stream (its sender died): said, then raised
            self._reporter(params, "receive", 0).failed(0, exc)
            raise
        try:
            sent = json.loads(data) if len(data) <= MAX_BODY else None
        except ValueError:
            sent = None
        if not isinstance(sent, dict) or sent.get("snapshot") != params["snapshot"] or \
                not isinstance(sent.get("bytes"), int):
            raise BackendError("InvalidStream", f"the stream of {params['snapshot']} of "
                                                f"machine {params['uuid']} is not one")
        self._faults.fail_if_asked("migration_stream")
        with self._lock:
            self._check_receivable(params)  # the copy may have gone meanwhile
            received = self._migrations[params["uuid"]]["received"]
            if _find(received, params["snapshot"]) is None:
                received.append({"name": params["snapshot"], "bytes": sent["bytes"],
                                 "at": time.time()})
                self._save_state()
        self._reporter(params, "receive", sent["bytes"])(sent["bytes"], done=True)
        return {"bytes": sent["bytes"]}

    def _stream_size(self, machine: Mapping[str, Any], snapshot: Mapping[str, Any],
                     parent: Mapping[str, Any] | None) -> int:
        full = int(machine["disk_mb"] * MIB * self.migration_fill)
        if parent is None:
            return full
        wrote = parent["running"] or snapshot["running"]
        return int(full * INCREMENT_SHARE) if wrote else 0

    def _paced_body(self, name: str, size: int,
                    report: Callable[[int], None]) -> Iterator[bytes]:
        """Blanks (JSON allows them before a value) while the stream's time passes, then the
        body: the POST is open all along, as a real stream's would be."""
        seconds = size / (self.transfer_mbps * 1e6) if self.transfer_mbps > 0 else 0.0
        for step in range(1, PACE_STEPS + 1):
            time.sleep(seconds / PACE_STEPS)
            yield b" "
            report(size * step // PACE_STEPS)
        yield json.dumps({"bytes": size, "snapshot": name}).encode()

    def _reporter(self, params: Mapping[str, Any], side: str,
                  total: int) -> ProgressReporter:
        return ProgressReporter(self._progress, {
            "migration_uuid": params["migration_uuid"], "server_uuid": self.server_uuid,
            "machine_uuid": params["uuid"], "side": side, "snapshot": params["snapshot"],
            "total": total})

    def _forget_if_idle(self, uuid: str) -> None:
        """A machine shown again with no migration snapshots left needs no entry."""
        state = self._migrations.get(uuid)
        if state is not None and not (state["hidden"] or state["sent"] or state["received"]):
            del self._migrations[uuid]


def _read_body(body: IO[bytes]) -> bytes:
    """The whole body (a raw stream's read answers a chunk at a time), MAX_BODY + 1 bytes at
    most: more is not a sim stream."""
    data = b""
    while len(data) <= MAX_BODY and (piece := body.read(MAX_BODY + 1 - len(data))):
        data += piece
    return data


def _blank() -> dict[str, Any]:
    return {"migration_uuid": None, "hidden": False, "sent": [], "received": [],
            "activated": None}


def _find(snapshots: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    return next((s for s in snapshots if s["name"] == name), None)
