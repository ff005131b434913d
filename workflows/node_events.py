"""Status reports applied a batch at a time: the same rules as :func:`nodes.apply_status`,
with the database work of a whole batch done in a few statements.

For a batch of reports from many servers, one transaction: one ``SELECT ... FOR NO KEY
UPDATE`` of their server rows (in uuid order, as every report locks them: no lock cycle
between two consumers), one ``SELECT`` of all their watched machines, one executemany
``UPDATE`` of the server columns (SQLAlchemy's bulk UPDATE by primary key), and UPDATEs of
only the machines whose state or suspicion changed (the ORM flush, grouped). The rules per
machine are :func:`nodes.follow_report`, shared with the one-report path.

Several reports of one server in a batch apply in rounds, oldest first, so each sees the
one before it exactly as one-at-a-time application would. A report whose server is not
registered yet is returned (``early``) for the caller to keep until the registration.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, lazyload

from headnode.services import overlay
from headnode.services.suspicion import utc
from headnode.store.models import Machine, Server
from workflows import nodes

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    #: reports applied (not stale, server known)
    applied: int = 0
    #: reports older than the one already applied for their server
    stale: int = 0
    #: machines whose state changed
    changed: int = 0
    #: reports (as loaded) of servers not registered yet, to keep for their registration
    early: list[dict[str, Any]] = field(default_factory=list)
    #: servers whose report was applied (their questions are due now)
    servers: list[str] = field(default_factory=list)


def rounds(statuses: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Round k holds the k-th oldest report of each server: within a round a server has
    one report, and a server's reports apply in the order they were taken."""
    by_server: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for status in statuses:
        by_server[status["server_uuid"]].append(status)
    out: list[list[dict[str, Any]]] = []
    for reports in by_server.values():
        for k, status in enumerate(sorted(reports, key=lambda s: s["timestamp"])):
            if k == len(out):
                out.append([])
            out[k].append(status)
    return out


def apply_reports(session: Session, statuses: Sequence[dict[str, Any]],
                  overlay_out: list[overlay.Message] | None = None) -> BatchResult:
    """Apply loaded reports (ServerStatusSchema) in the caller's transaction."""
    result = BatchResult()
    directory = _LazyDirectory(session)
    for batch in rounds(statuses):
        _apply_round(session, batch, result, directory, overlay_out)
    return result


class _LazyDirectory:
    """The overlay directory, read at most once per batch and only if a report's node
    carries a tag over an overlay (most fleets have none)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._directory: overlay.Directory | None = None

    def due(self, server_uuid: str, sysinfo: dict[str, Any] | None) -> overlay.Message:
        mine = overlay.underlays(sysinfo)
        if not mine:
            return overlay.Message(server_uuid, {}, overlay.NO_OVERLAY, True)
        if self._directory is None:
            self._directory = overlay.Directory.of(overlay.overlay_nodes(self.session))
        return self._directory.message_for(server_uuid, mine, repair=True)


def _apply_round(session: Session, statuses: list[dict[str, Any]], result: BatchResult,
                 directory: _LazyDirectory, overlay_out: list[overlay.Message] | None) -> None:
    by_uuid = {s["server_uuid"]: s for s in statuses}
    rows = session.execute(
        select(Server.uuid, Server.last_status_at, Server.reported_machines, Server.sysinfo)
        .where(Server.uuid.in_(sorted(by_uuid))).order_by(Server.uuid)
        # FOR NO KEY UPDATE: a provision's foreign-key (key-share) locks do not wait
        .with_for_update(key_share=True)).all()
    known = {row.uuid: row for row in rows}
    result.early.extend(s for uuid, s in by_uuid.items() if uuid not in known)
    fresh: dict[str, tuple[dict[str, Any], datetime]] = {}
    for uuid, row in known.items():
        status = by_uuid[uuid]
        taken_at = datetime.fromtimestamp(status["timestamp"], UTC)
        if row.last_status_at is not None and taken_at < utc(row.last_status_at):
            result.stale += 1  # older than the report we already applied
            continue
        fresh[uuid] = (status, taken_at)
    if not fresh:
        return
    session.execute(update(Server), [
        {"uuid": uuid, "pool_used_mb": status["pool_used_mb"], "last_status_at": taken_at,
         "reported_machines": nodes.reported_states(known[uuid].reported_machines, status)}
        for uuid, (status, taken_at) in sorted(fresh.items())])
    if overlay_out is not None:
        for uuid, (status, _taken_at) in sorted(fresh.items()):
            due = directory.due(uuid, known[uuid].sysinfo)
            if due.version != status["overlay_version"]:
                overlay_out.append(due)
    ours: dict[str, list[Machine]] = defaultdict(list)
    for machine in _machines(session, fresh):
        ours[machine.server_uuid or ""].append(machine)
    for uuid, (status, taken_at) in sorted(fresh.items()):
        reported = {m["uuid"]: m for m in status["machines"]}
        result.changed += nodes.follow_report(session, ours[uuid], reported, taken_at,
                                              full=status["full"])
    result.applied += len(fresh)
    result.servers.extend(sorted(fresh))


def _machines(session: Session,
              fresh: dict[str, tuple[dict[str, Any], datetime]]) -> Sequence[Machine]:
    """The machines the round's reports speak about, in one SELECT: every watched one of a
    server with a full report, only the listed ones of a delta (the steady state: a delta
    that lists nothing reads no machine)."""
    full = sorted(uuid for uuid, (status, _) in fresh.items() if status["full"])
    listed = sorted(m["uuid"] for status, _ in fresh.values() if not status["full"]
                    for m in status["machines"])
    if not full and not listed:
        return []
    which: ColumnElement[bool] = Machine.server_uuid.in_(full)
    if listed:
        which = or_(which, and_(Machine.uuid.in_(listed),
                                Machine.server_uuid.in_(sorted(fresh))))
    return session.scalars(
        select(Machine).where(which, Machine.state.in_(nodes.WATCHED))
        .options(lazyload(Machine.nics))).all()  # a report never needs them
