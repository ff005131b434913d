"""Fault injection of a sim node (tests and chaos drills, ``agent.sim_faults``): an operation
can be made to fail with a given message, or to take longer than the node-wide latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from agents.backends.base import InjectedFault


class Faults:
    def __init__(self, latency_ms: int = 0) -> None:
        self._lock = threading.Lock()
        self._global_latency_ms = latency_ms
        self._fail: dict[str, str] = {}
        self._latency_ms: dict[str, int] = {}

    def configure(self, fail: Mapping[str, str] | None = None,
                  latency_ms: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Replace the switches: ops in ``fail`` raise InjectedFault with the given message,
        ops in ``latency_ms`` sleep that long (instead of the node-wide latency). Calling it
        with nothing clears every switch."""
        with self._lock:
            self._fail = dict(fail or {})
            self._latency_ms = {op: int(ms) for op, ms in (latency_ms or {}).items()}
        return self.describe()

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"fail": dict(self._fail), "latency_ms": dict(self._latency_ms)}

    def begin(self, op: str) -> None:
        """Called as operation ``op`` starts: fail it if asked, else wait its latency."""
        self.fail_if_asked(op)
        self.sleep(op)

    def fail_if_asked(self, op: str) -> None:
        with self._lock:
            message = self._fail.get(op)
        if message is not None:
            raise InjectedFault(message)

    def sleep(self, op: str) -> None:
        with self._lock:
            ms = self._latency_ms.get(op, self._global_latency_ms)
        if ms > 0:
            time.sleep(ms / 1000.0)
