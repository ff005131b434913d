"""Progress events of one end of one migration stream (``events.migration_progress``,
:class:`schemas.migrations.MigrationProgressSchema`): at most one a second, and the last;
and a received body counted as it is read."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import IO, Any

from agents.backends.base import BackendError

log = logging.getLogger(__name__)

#: at most one event per this many seconds per stream end, and always the last
PROGRESS_INTERVAL = 1.0

#: where progress events go (agents.tasks.send_migration_progress in an agent)
ProgressSink = Callable[[Mapping[str, Any]], None]


class ProgressReporter:
    """Progress events of one end of one stream (MigrationProgressSchema): at most one a
    second, and always the last. Progress is advisory: a broker that cannot take an event
    is logged, and the stream goes on."""

    def __init__(self, sink: ProgressSink | None, fields: Mapping[str, Any]) -> None:
        self._sink = sink
        self._fields = dict(fields)
        self._last = -PROGRESS_INTERVAL

    def __call__(self, nbytes: int, done: bool = False) -> None:
        now = time.monotonic()
        if self._sink is None or (not done and now - self._last < PROGRESS_INTERVAL):
            return
        self._last = now
        self._send({"bytes": nbytes, "done": done})

    def failed(self, nbytes: int, exc: BaseException) -> None:
        """The stream broke at this end: its last event says why, so that the head node
        learns it at once even when the other end (a killed sender) never answers."""
        if self._sink is None:
            return
        code, message = ((exc.code, exc.message) if isinstance(exc, BackendError)
                         else ("MigrationStreamCut", f"{type(exc).__name__}: {exc}"))
        self._send({"bytes": nbytes, "done": True,
                    "error": {"code": code, "message": message[:2000]}})

    def _send(self, event: dict[str, Any]) -> None:
        assert self._sink is not None
        try:
            self._sink({**self._fields, **event, "at": time.time()})
        except Exception as exc:  # noqa: BLE001 -- advisory, whatever the broker raised
            log.warning("migration %s: progress event not sent: %s",
                        self._fields["migration_uuid"], exc)


class CountedBody:
    """A received stream's body, read through (``read`` as the stream's), its bytes counted
    and reported as they come."""

    def __init__(self, body: IO[bytes], report: ProgressReporter) -> None:
        self._body = body
        self._report = report
        self.bytes = 0

    def read(self, size: int = -1, /) -> bytes:
        piece = self._body.read(size)
        self.bytes += len(piece)
        self._report(self.bytes)
        return piece
