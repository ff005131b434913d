"""A pytest plugin for mutation runs of services/capacity.py: hot-path statements built on
every call.

services/statements.py keeps the statements of the hot paths, once built, per thread. In a
mutation run that hides the code that builds them (capacity._room and _policy_binds, which
only build the guarded UPDATE): mutmut learns which tests reach a function by running them
all once, and only the first test of each thread builds the statement; the others, and every
mutant's session forked from that process, reuse the one built then, so a mutant there was
never run. Loaded with ``-p`` (bench/mutation.py), before the tests import any service, this
makes the decorator a plain call: the same SQL, built anew each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from headnode.services import statements

T = TypeVar("T")


def _uncached(build: Callable[..., T]) -> Callable[..., T]:
    return build


statements.per_thread_cache = _uncached
