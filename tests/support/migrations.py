"""What the migration tests share: the autogenerate comparison limited to a migration's own
tables and columns, the columns as the database has them, and a server row as the schema
before 0012 held it."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from headnode.store.db import engine_for
from headnode.store.models import Base

#: a server as schema 0011 stores it (every NOT NULL column given)
OLD_SERVER = text(
    "INSERT INTO servers (uuid, hostname, status, setup, reserved, headnode, backend,"
    " traits, sysinfo, ram_mb, cpus, disk_mb, ram_inflight_mb, disk_inflight_mb,"
    " cpu_inflight, ram_committed_mb, disk_committed_mb, cpu_committed, machine_count,"
    " pool_used_mb, created_at, updated_at) VALUES ('s', 'cn1', 'running', 1, 0, 0,"
    " 'sim', '{}', '{}', 1024, 1, 1024, 0, 0, 0, 0, 0, 0, 0, 0,"
    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')")


def model_drift(url: str, columns: Collection[tuple[str, str]] = (),
                tables: Collection[str] = ()) -> list[Any]:
    """Where the models and the migrated database disagree about these tables or columns."""
    with engine_for(url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    return [d for d in diffs if _touches(d, columns, tables)]


def _touches(diff: Any, columns: Collection[tuple[str, str]], tables: Collection[str]) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    # ("add_table", Table), ("add_column", schema, table, Column), ("modify_*", schema,
    # table, column, ...)
    return any(getattr(item[1], "name", None) in tables
               or (len(item) > 3 and (item[2] in tables
                                      or (item[2], getattr(item[3], "name", item[3]))
                                      in columns))
               for item in items)


def columns_of(url: str, *tables: str) -> dict[tuple[str, str], Any]:
    """{(table, column): what the database says of it}."""
    with engine_for(url).connect() as conn:
        return {(table, c["name"]): c for table in tables
                for c in inspect(conn).get_columns(table)}
