"""A job's step timeline as the console shows it: one row per step of its chain and onerror
chain, with each attempt's start, end, duration and error, from the records the job engine
keeps (``chain_results`` / ``onerror_results``: one entry per attempt, oldest first)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.ops import JOB_FINISHED

PHASES = (("chain", "chain_results"), ("onerror", "onerror_results"))


@dataclass(frozen=True)
class Attempt:
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None
    error: dict[str, Any] | None
    skipped: bool


@dataclass(frozen=True)
class StepRow:
    phase: str
    name: str
    #: pending, running, succeeded, skipped or failed
    state: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def started_at(self) -> datetime | None:
        return self.attempts[0].started_at if self.attempts else None

    @property
    def finished_at(self) -> datetime | None:
        return self.attempts[-1].finished_at if self.attempts else None

    @property
    def duration(self) -> float | None:
        return seconds_between(self.started_at, self.finished_at)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [a.error for a in self.attempts if a.error]


@dataclass(frozen=True)
class Timeline:
    execution: str
    finished: bool
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    #: from start to end (to now while it runs); None before it starts
    duration: float | None
    #: how long it waited in the queue before its first step
    queued_for: float | None
    error: dict[str, Any] | None
    steps: list[StepRow]


def timeline(job: dict[str, Any], now: datetime | None = None) -> Timeline:
    """The timeline of ``job`` (as ``services.jobs.job_to_dict`` gives it)."""
    finished = job["execution"] in JOB_FINISHED
    started, ended = job.get("started_at"), job.get("finished_at")
    running_end = ended if finished else (now or datetime.now(UTC))
    steps: list[StepRow] = []
    for phase, results in PHASES:
        entries = list(job.get(results) or [])
        names = list(job.get(phase) or [])
        steps += [_step(phase, name, [e for e in entries if e.get("name") == name])
                  for name in names]
        # records of steps the definition does not name (a workflow changed since)
        steps += [_step(phase, name, [e for e in entries if e.get("name") == name])
                  for name in dict.fromkeys(e.get("name") for e in entries)
                  if name not in names and isinstance(name, str)]
    if job.get("phase") != "onerror":
        # the clean-up chain runs only after a failure: until then its steps are not due
        steps = [s for s in steps if s.phase == "chain" or s.attempts]
    return Timeline(
        execution=job["execution"], finished=finished, created_at=job.get("created_at"),
        started_at=started, finished_at=ended,
        duration=seconds_between(started, running_end) if started else None,
        queued_for=seconds_between(job.get("created_at"), started),
        error=job.get("error"), steps=steps)


def _step(phase: str, name: str, entries: list[dict[str, Any]]) -> StepRow:
    attempts = [_attempt(e) for e in entries]
    return StepRow(phase, name, _state(attempts), attempts)


def _attempt(entry: dict[str, Any]) -> Attempt:
    started, ended = parse_time(entry.get("started_at")), parse_time(entry.get("finished_at"))
    error = entry.get("error")
    result = entry.get("result")
    return Attempt(started, ended, seconds_between(started, ended),
                   error if isinstance(error, dict) else None,
                   isinstance(result, dict) and result.get("skipped") is True)


def _state(attempts: list[Attempt]) -> str:
    if not attempts:
        return "pending"
    last = attempts[-1]
    if last.finished_at is None:
        return "running"
    if last.error:
        return "failed"
    return "skipped" if last.skipped else "succeeded"


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def human_duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; an em dash for none."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def to_json(t: Timeline) -> dict[str, Any]:
    """The timeline for job.js (and anyone reading it as JSON): times as ISO 8601."""
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "execution": t.execution, "finished": t.finished, "created_at": iso(t.created_at),
        "started_at": iso(t.started_at), "finished_at": iso(t.finished_at),
        "duration": t.duration, "queued_for": t.queued_for, "error": t.error,
        "steps": [{"phase": s.phase, "name": s.name, "state": s.state,
                   "started_at": iso(s.started_at), "finished_at": iso(s.finished_at),
                   "duration": s.duration, "attempts": len(s.attempts), "errors": s.errors}
                  for s in t.steps],
    }
