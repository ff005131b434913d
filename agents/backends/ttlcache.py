"""Answers of node commands kept for a few seconds, by key, for the status checks that run
every 0.5 s (``vmadm list``, ``zfs list``, ``imgadm list``): an operation that changes what a
key answers forgets it, and an answer computed while such an operation ended is not kept
(each key counts the times it was forgotten)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TtlCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, object]] = {}
        self._generations: dict[str, int] = {}

    def get(self, key: str, compute: Callable[[], T]) -> T:
        """The kept answer while it is younger than ``ttl``, else ``compute()``'s."""
        with self._lock:
            hit = self._values.get(key)
            generation = self._generations.get(key, 0)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return hit[1]  # type: ignore[return-value]
        value = compute()
        with self._lock:
            # an operation that ended while this was computed may have made it stale
            if self._generations.get(key, 0) == generation:
                self._values[key] = (time.monotonic(), value)
        return value

    def forget(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)
                self._generations[key] = self._generations.get(key, 0) + 1
