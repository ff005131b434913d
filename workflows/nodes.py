"""What compute nodes tell the head node: registration, status reports, heartbeats.

Heartbeats live in Redis (one hash field per server) and reach the database only when a
server's status changes, as CNAPI's reconciler does; a status report makes the node's truth
about its machines win over ours, except for a machine that a job is changing right now.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from headnode.services import capacity
from headnode.store.models import Machine, Server, utcnow
from schemas.agent import ServerStatusSchema, SysinfoSchema

log = logging.getLogger(__name__)

#: the database copy of a heartbeat is refreshed at most this often (it is for display)
HEARTBEAT_WRITE_INTERVAL = 30.0


def register_server(session: Session, raw_sysinfo: dict[str, Any]) -> Server:
    info = SysinfoSchema().load(raw_sysinfo, unknown="exclude")
    # FOR NO KEY UPDATE: no key changes, so a provision's foreign-key (key-share) lock on
    # this row does not hold a registration up, nor does the registration hold it up.
    server = session.get(Server, info["uuid"], with_for_update={"key_share": True})
    if server is None:
        # A new node waits for an operator to set it up (CNAPI: setup=false).
        server = Server(uuid=info["uuid"], setup=False, reserved=False, headnode=False,
                        status="running", last_heartbeat=time.time())
        session.add(server)
    server.hostname = info["hostname"]
    server.backend = info["backend"]
    server.cpus = info["cpus"]
    server.ram_mb = info["ram_mb"]
    server.disk_mb = info["pool_size_mb"]
    server.traits = server.traits or info.get("traits") or {}
    server.sysinfo = raw_sysinfo
    return server


def apply_status(session: Session, raw_status: dict[str, Any]) -> int:
    """Record a node's status report; returns how many machines changed state."""
    status = ServerStatusSchema().load(raw_status, unknown="exclude")
    server = session.get(Server, status["server_uuid"])
    if server is None:
        return 0  # not registered yet; its registration message is on its way
    server.pool_used_mb = status["pool_used_mb"]
    server.last_status_at = datetime.fromtimestamp(status["timestamp"], UTC)
    reported = {m["uuid"]: m for m in status["machines"]}
    changed = 0
    ours = session.scalars(
        select(Machine).where(Machine.server_uuid == server.uuid,
                              Machine.state.in_(("running", "stopped", "unknown", "failed")))
    ).all()
    taken_at = datetime.fromtimestamp(status["timestamp"], UTC)
    for machine in ours:
        if machine.job_uuid is not None:
            continue  # a job is changing it; the job records the result
        if machine.updated_at is not None and machine.updated_at > taken_at:
            # The report was taken before our last news of this machine (a job that has
            # just finished, a report delayed in the queue): it cannot contradict it.
            continue
        node = reported.get(machine.uuid)
        if node is None:
            if machine.state == "failed":
                continue  # never made it onto the node
            # Gone from its node (as vm-agent reports it): destroyed, and its room is free.
            machine.state = "destroyed"
            machine.destroyed_at = utcnow()
            capacity.release(session, machine.uuid)
            changed += 1
        elif node["state"] != machine.state and node["state"] in ("running", "stopped"):
            machine.state = node["state"]
            machine.last_known_state = None
            changed += 1
    return changed


def reconcile_heartbeats(session: Session, heartbeats: dict[str, float], lifetime: float,
                         now: float | None = None,
                         table_since: float | None = None) -> tuple[list[str], list[str]]:
    """Mark servers with stale heartbeats unknown (and their running machines), and fresh
    ones running again. Returns (servers now unknown, servers back to running).

    ``table_since`` is when the heartbeat table was first seen (it starts empty after a Redis
    restart): a server missing from a table younger than ``lifetime`` keeps its status, so
    losing Redis does not flap the whole fleet to unknown.

    Nothing is locked to read: every 5 s, and under any load, most servers do not change.
    A provision holds its servers' rows until it commits (the key-share locks of its foreign
    keys, the row lock of every guarded UPDATE it tried, even a refused one), so locking
    every server here closed lock cycles with provisions (deadlocks). A changing server is
    written by a guarded UPDATE, in uuid order; the heartbeat kept for display skips a row
    another transaction holds (it is written on a later round)."""
    now = time.time() if now is None else now
    young_table = table_since is not None and now - table_since <= lifetime
    gone, back, shown = [], [], {}
    servers = session.execute(
        select(Server.uuid, Server.status, Server.last_heartbeat).order_by(Server.uuid)).all()
    for uuid, status, last_heartbeat in servers:
        beat = heartbeats.get(uuid)
        if beat is None and young_table:
            continue
        fresh = beat is not None and now - beat <= lifetime
        if fresh and status != "running":
            if _change_status(session, uuid, status, "running", beat):
                _restore_machines(session, uuid)
                back.append(uuid)
        elif not fresh and status == "running":
            if _change_status(session, uuid, status, "unknown", beat):
                _machines_unknown(session, uuid)
                gone.append(uuid)
        elif beat is not None and (last_heartbeat is None
                                   or beat - last_heartbeat >= HEARTBEAT_WRITE_INTERVAL):
            shown[uuid] = beat
    _show_heartbeats(session, shown)
    return gone, back


def _change_status(session: Session, uuid: str, was: str, status: str,
                   beat: float | None) -> bool:
    """Set a server's status if it still is ``was`` (a registration or an operator may have
    written it since we read it); True if it changed."""
    values: dict[str, Any] = {"status": status}
    if beat is not None:
        values["last_heartbeat"] = beat
    changed = session.execute(
        update(Server).where(Server.uuid == uuid, Server.status == was).values(values)
        .execution_options(synchronize_session=False))
    return bool(changed.rowcount == 1)  # type: ignore[attr-defined]


def _show_heartbeats(session: Session, beats: dict[str, float]) -> None:
    """Write the displayed heartbeat of the servers no other transaction holds now."""
    if not beats:
        return
    free = session.scalars(
        select(Server.uuid).where(Server.uuid.in_(sorted(beats))).order_by(Server.uuid)
        .with_for_update(key_share=True, skip_locked=True)).all()
    if free:
        session.execute(update(Server), [{"uuid": uuid, "last_heartbeat": beats[uuid]}
                                         for uuid in free])


def _machines_unknown(session: Session, server_uuid: str) -> None:
    session.execute(
        update(Machine)
        .where(Machine.server_uuid == server_uuid, Machine.state == "running")
        .values(state="unknown", last_known_state="running")
        .execution_options(synchronize_session=False)
    )


def _restore_machines(session: Session, server_uuid: str) -> None:
    # Until the node's status report arrives, the last state we knew is the best guess.
    session.execute(
        update(Machine)
        .where(Machine.server_uuid == server_uuid, Machine.state == "unknown",
               Machine.last_known_state.is_not(None))
        .values(state=Machine.last_known_state, last_known_state=None)
        .execution_options(synchronize_session=False)
    )
