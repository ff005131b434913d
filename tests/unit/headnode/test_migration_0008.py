"""Migration 0008 adds exactly the job columns the models declare for cancels."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from headnode.store.db import engine_for
from headnode.store.models import Base

COLUMNS = {"cancel_requested_at", "canceled_by"}


def _names(diff: Any) -> set[str]:
    # diffs are tuples (op, ..., table, column or name, ...) or lists of such tuples
    items = diff if isinstance(diff, list) else [diff]
    found: set[str] = set()
    for item in items:
        for part in item:
            found.add(part if isinstance(part, str) else str(getattr(part, "name", "")))
    return found


def test_models_and_migration_agree(database_url: str) -> None:
    with engine_for(database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        columns = {c["name"]: c for c in inspect(conn).get_columns("jobs")}
    assert [d for d in diffs if _names(d) & COLUMNS] == []
    assert set(columns) >= COLUMNS
    assert all(columns[name]["nullable"] for name in COLUMNS)
