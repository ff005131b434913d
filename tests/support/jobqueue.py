"""A job queue for service tests: remembers what would have been started, sends nothing."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RecordingJobQueue:
    """Satisfies ``headnode.services.context.JobQueue``; ``enqueued`` lists job uuids in order."""

    enqueued: list[str] = field(default_factory=list)
    #: what backlog() answers: set it to play a worker that is behind
    waiting: int = 0
    #: job uuids whose cancel was sent, in order
    canceled: list[str] = field(default_factory=list)

    def enqueue(self, job_uuid: str) -> None:
        self.enqueued.append(job_uuid)

    def cancel(self, job_uuid: str) -> None:
        self.canceled.append(job_uuid)

    def backlog(self) -> int:
        return self.waiting

    def clear(self) -> None:
        self.enqueued.clear()
