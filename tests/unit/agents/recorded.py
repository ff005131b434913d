"""A host-command runner that answers fixed argument lists with recorded outputs, and fails
the test on any command it was not told about (so an argument list that drifts is caught)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agents.backends.host.cmd import Completed


@dataclass
class RecordedHost:
    answers: dict[tuple[str, ...], str | tuple[int, str]] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    stdin: list[bytes | None] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], input: bytes | None, timeout: float,
                 output: Path | None) -> Completed:
        key = tuple(argv)
        self.calls.append(key)
        self.stdin.append(input)
        if key not in self.answers:
            raise AssertionError(f"unexpected host command: {key}")
        answer = self.answers[key]
        if isinstance(answer, tuple):
            return Completed(key, answer[0], "", answer[1])
        return Completed(key, 0, answer, "")
