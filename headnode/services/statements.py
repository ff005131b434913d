"""SQL statements built once per thread, for the hot paths.

Building a SQLAlchemy statement can cost as much as running it, so the create path builds its
statements once. Not once per process, though: a statement object fills in memoized parts of
itself the first time it is compiled, and two threads compiling one object at the same moment
(the API serves requests on threads) can mix them up. Under load that showed as a rare
``NoSuchColumnError`` on the first creates of a fresh API process. Each thread keeps its own
objects; the engine's cache of compiled SQL, which is made for sharing, still serves them all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


def per_thread_cache(build: Callable[..., T]) -> Callable[..., T]:
    """``build(*args)`` once per thread and distinct ``args`` (hashable, few)."""
    local = threading.local()

    @wraps(build)
    def cached(*args: Hashable) -> T:
        built: dict[tuple[Hashable, ...], T] = local.__dict__.setdefault("built", {})
        if args not in built:
            built[args] = build(*args)
        return built[args]

    return cached
