"""Migration 0003 builds exactly what the models say about machine snapshots."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from headnode.store.db import engine_for
from headnode.store.models import Base

TABLE = "machine_snapshots"


def _concerns_table(diff: Any) -> bool:
    # diffs are tuples (op, object, ...) or lists of column-level tuples
    items = diff if isinstance(diff, list) else [diff]
    for item in items:
        for part in item:
            name = getattr(part, "name", None) if not isinstance(part, str) else part
            table = getattr(part, "table", None)
            if name == TABLE or getattr(table, "name", None) == TABLE:
                return True
    return False


def test_models_and_migration_agree(database_url: str) -> None:
    with engine_for(database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if _concerns_table(d)] == []
    with engine_for(database_url).connect() as conn:
        from sqlalchemy import inspect

        inspector = inspect(conn)
        assert inspector.get_pk_constraint(TABLE)["constrained_columns"] == [
            "machine_uuid", "name"]
        assert [fk["referred_table"] for fk in inspector.get_foreign_keys(TABLE)] == [
            "machines"]
