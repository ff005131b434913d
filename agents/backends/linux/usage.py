"""Figures of the node that status reports carry, cached: status is asked every 0.5 s and
they cost commands (btrfs qgroups or zfs list for disk usage; ip and nft for leftovers)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from agents.backends.linux.storage import Storage


class UsageCache:
    def __init__(self, storage: Storage, ttl: float) -> None:
        self.storage = storage
        self.ttl = ttl
        self._lock = threading.Lock()
        self._machines: dict[str, int] = {}
        self._pool: tuple[int, int] = (0, 0)
        self._at = -math.inf

    def machines(self, *, refresh: bool = True) -> dict[str, int]:
        """Bytes used by each machine; ``refresh=False``: as last measured (an operation's
        answer need not wait for a qgroup scan; status reports refresh them)."""
        if refresh:
            self._refresh()
        with self._lock:
            return dict(self._machines)

    def pool(self) -> tuple[int, int]:
        """(size, used) bytes of the pool."""
        self._refresh()
        with self._lock:
            return self._pool

    def invalidate(self) -> None:
        with self._lock:
            self._at = -math.inf

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return
        machines, pool = self.storage.usage(), self.storage.pool_usage()
        with self._lock:
            self._machines, self._pool, self._at = machines, pool, time.monotonic()


class CachedList:
    """A list (e.g. the leftovers), computed again after ``ttl`` seconds or an invalidation."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: list[str] = []
        self._at = -math.inf

    def get(self, compute: Callable[[], list[str]]) -> list[str]:
        with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return list(self._value)
        value = compute()
        with self._lock:
            self._value, self._at = value, time.monotonic()
        return list(value)

    def invalidate(self) -> None:
        with self._lock:
            self._at = -math.inf
