"""A pytest plugin for mutation runs: keeps only the tests that need no service.

Each mutant runs the tests that reach the mutated function in a fresh pytest session; a test
on PostgreSQL or Redis would start a server per mutant. Those tests are deselected here, so a
mutant costs the pure unit tests only (bench/mutation.py loads this with ``-p``).
"""

from __future__ import annotations

import pytest

#: session fixtures that start a server (tests/conftest.py); any test using one, however
#: indirectly, is left out
SERVICE_FIXTURES = frozenset({"postgres_server", "redis_server"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    pure: list[pytest.Item] = []
    impure: list[pytest.Item] = []
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        (impure if uses & SERVICE_FIXTURES else pure).append(item)
    if impure:
        config.hook.pytest_deselected(items=impure)
        items[:] = pure
