"""Revoked node credentials: the nodes an operator forgot (``sdc server forget``).

A node's key is derived from the message key and its uuid (sdccommon/signing.py), so it
cannot be taken back from the node; instead its uuid is recorded here, and the head node
refuses whatever that key signs from then on (messages and heartbeats), and issues the uuid
no credentials again. A node set up anew gets a new uuid, and so a new key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from headnode.store.db import session_factory
from headnode.store.models import RevokedNode

log = logging.getLogger(__name__)

#: how long a worker trusts its copy of the revoked list: a forgotten node's messages may
#: still run for at most this long after the forget commits
CACHE_SECONDS = 2.0


def revoke(session: Session, uuid: str, hostname: str = "") -> None:
    """Record that ``uuid``'s credentials are revoked (again: harmless)."""
    if session.get(RevokedNode, uuid) is None:
        session.add(RevokedNode(uuid=uuid, hostname=hostname))


def revoked_among(session: Session, uuids: Iterable[str]) -> set[str]:
    wanted = sorted(set(uuids))
    if not wanted:
        return set()
    return set(session.scalars(select(RevokedNode.uuid).where(RevokedNode.uuid.in_(wanted))))


def is_revoked(session: Session, uuid: str) -> bool:
    return bool(revoked_among(session, [uuid]))


class RevokedNodes:
    """``revoked(uuid) -> bool`` for sdccommon.signing, read from the database at most once
    per ``ttl`` seconds per process (the table is small: one row per forgotten node). The
    session factory is made on first use, after a worker's fork. A failed read raises: the
    caller refuses the message rather than guess."""

    def __init__(self, database_url: str, ttl: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.database_url, self.ttl, self.clock = database_url, ttl, clock
        self._sessions: sessionmaker[Session] | None = None
        self._revoked: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def __call__(self, uuid: str) -> bool:
        return uuid in self.current()

    def current(self) -> frozenset[str]:
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.ttl:
                self._revoked, self._read_at = self._read(), now
            return self._revoked

    def _read(self) -> frozenset[str]:
        if self._sessions is None:
            self._sessions = session_factory(self.database_url)
        with self._sessions() as session:
            return frozenset(session.scalars(select(RevokedNode.uuid)))
