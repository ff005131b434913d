"""A job queue for service tests: remembers what would have been started, sends nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordingJobQueue:
    """Satisfies ``headnode.services.context.JobQueue``; ``enqueued`` lists job uuids in order."""

    enqueued: list[str] = field(default_factory=list)
    #: what backlog() answers: set it to play a worker that is behind
    waiting: int = 0
    #: job uuids whose cancel was sent, in order
    canceled: list[str] = field(default_factory=list)
    #: agent messages sent without a reply: (server_uuid, op, params), in order
    sent: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def enqueue(self, job_uuid: str) -> None:
        self.enqueued.append(job_uuid)

    def cancel(self, job_uuid: str) -> None:
        self.canceled.append(job_uuid)

    def send_agent(self, server_uuid: str, op: str, params: dict[str, Any]) -> None:
        self.sent.append((server_uuid, op, params))

    def backlog(self) -> int:
        return self.waiting

    def clear(self) -> None:
        self.enqueued.clear()
