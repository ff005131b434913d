"""What every service call needs: settings, a session factory and a way to start jobs.

The API builds one per app, the workflow worker one per process; neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from headnode.config import HeadnodeSettings
from headnode.store.db import session_factory


class JobQueue(Protocol):
    def enqueue(self, job_uuid: str) -> None:
        """Start a committed job (send its first step to the workflow worker)."""

    def backlog(self) -> int:
        """How many messages wait for the workflow worker (0 when that cannot be known)."""

    def cancel(self, job_uuid: str) -> None:
        """Have the workflow worker act on a committed cancel of the job now."""

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any]) -> None:
        """Send a committed change to a node's agent (``agent.<op>``), asking no reply."""


@dataclass
class ServiceContext:
    settings: HeadnodeSettings
    jobs: JobQueue | None = None
    _sessions: sessionmaker[Session] | None = field(default=None, repr=False)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return self._sessions or session_factory(self.settings.resolved_database_url)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def read(self) -> Session:
        """A session for reads only (use as a context manager)."""
        return self.sessions()
