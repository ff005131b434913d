"""``events.migration_progress``: how far one end of a migration's stream is
(schemas.migrations.MigrationProgressSchema), applied with the other node events.

Only the migration's source or target may speak of it (the event's proven sender), only
while one of its streams is under way (a sync's job holds a token for it), and only about
the snapshot that stream carries: a late event of an earlier stream changes nothing. The
bytes either end reports move ``sent_bytes`` forward (never back); the sending end's figures
give the rate. The stream's running entry in ``progress_history`` follows, so a watcher sees
bytes, total and rate as Triton's ``watch`` shows them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from headnode.store.models import Job, Migration, utcnow
from schemas.migrations import MigrationProgressSchema

log = logging.getLogger(__name__)

SCHEMA = MigrationProgressSchema()


def apply_progress(session: Session, raw: Any, sender: str | None) -> bool:
    """Record one progress event; False (logged) when it is malformed or not for a stream
    under way between ``sender`` and its peer."""
    try:
        event = SCHEMA.load(raw, unknown="exclude")
    except (ValidationError, TypeError) as exc:
        log.warning("dropped a migration progress event: %s", getattr(exc, "messages", exc))
        return False
    # SKIP LOCKED: a migration a job is changing right now is left alone (progress is
    # advisory), so a batch of node events never waits for a job's turn
    m = session.scalars(select(Migration).where(
        Migration.uuid == event["migration_uuid"],
        Migration.machine_uuid == event["machine_uuid"],
        Migration.finished_at.is_(None)).with_for_update(skip_locked=True)).one_or_none()
    if m is None:
        return False  # unknown, ended, or being changed by its job this instant
    if sender not in (m.source_server_uuid, m.target_server_uuid) \
            or event["server_uuid"] != sender:
        log.warning("ignored migration progress from server %s about migration %s: not one "
                    "of its servers", sender, event["migration_uuid"])
        return False
    if m.stream_token is None or event["snapshot"] != f"migration-{m.syncs + 1}":
        return False  # an earlier stream's late word
    m.sent_bytes = max(m.sent_bytes or 0, event["bytes"])
    if event["total"] is not None:
        m.total_bytes = event["total"]
    _follow(m, event)
    if event["error"] is not None:
        _stream_broke(session, m, event)
    return True


def _stream_broke(session: Session, m: Migration, event: dict[str, Any]) -> None:
    """One end says the stream broke (a receive whose sender died never gets the sender's
    reply to the head node): the sync's step is asked about at once instead of after its
    quiet time, and fails with this reason (workflows.migration_steps.stream_alive)."""
    error = event["error"]
    m.error = {"code": error["code"], "stream": event["snapshot"],
               "message": f"the {event['side']} end on server {event['server_uuid']}: "
                          f"{error['message']}"}
    if m.job_uuid is not None:
        session.execute(update(Job).where(Job.uuid == m.job_uuid, Job.execution == "running")
                        .values(step_deadline=time.time()))


def _follow(m: Migration, event: dict[str, Any]) -> None:
    """The stream's running entry of progress_history, made or brought up to date."""
    history = list(m.progress_history or [])
    last = history[-1] if history else None
    now = utcnow().isoformat()
    if last is None or last.get("stream") != event["snapshot"] or last.get("state") != "running":
        last = {"phase": m.phase, "state": "running", "stream": event["snapshot"],
                "message": f"syncing {event['snapshot']}", "bytes": 0, "total_bytes": None,
                "started_at": now, "at": now}
        history.append(last)
    last = dict(last)
    last["bytes"] = m.sent_bytes
    last["total_bytes"] = m.total_bytes
    last["at"] = now
    if event["side"] == "send":
        # the rate since the sender's first word about this stream (the node's clock)
        first_at = last.setdefault("first_at", event["at"])
        first_bytes = last.setdefault("first_bytes", event["bytes"])
        if event["at"] > first_at:
            m.rate_bps = int((event["bytes"] - first_bytes) / (event["at"] - first_at))
            last["transfer_bytes_second"] = m.rate_bps
    history[-1] = last
    m.progress_history = history  # a new list: the JSON column sees the change
