"""Migration 0007 adds exactly the columns the models declare for node truth, and its
downgrade removes them."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from headnode.store.db import engine_for
from headnode.store.models import Base

COLUMNS = {("servers", "reported_machines"), ("machines", "missing_since"),
           ("machines", "missing_asked_at"), ("machines", "missing_confirmed_at")}
INDEX = "ix_machines_missing"


def _touches_ours(diff: Any) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    for item in items:
        if getattr(item[1], "name", None) == INDEX:  # ("add_index" | "remove_index", Index)
            return True
        # ("add_column", schema, table, Column) or ("modify_*", schema, table, column, ...)
        if len(item) > 3 and (item[2], getattr(item[3], "name", item[3])) in COLUMNS:
            return True
    return False


def test_models_and_migration_agree(database_url: str) -> None:
    with engine_for(database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        columns = {(table, c["name"]) for table in ("servers", "machines")
                   for c in inspect(conn).get_columns(table)}
        indexes = {i["name"] for i in inspect(conn).get_indexes("machines")}
    assert [d for d in diffs if _touches_ours(d)] == []
    assert INDEX in indexes
    assert columns >= COLUMNS


def test_upgrade_and_downgrade_on_sqlite(tmp_path: Any) -> None:
    from alembic import command

    from headnode.store.migrate import alembic_config, upgrade

    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    command.downgrade(alembic_config(url), "0006")
    with engine_for(url).connect() as conn:
        columns = {(table, c["name"]) for table in ("servers", "machines")
                   for c in inspect(conn).get_columns(table)}
    assert not COLUMNS & columns
