"""Migration 0015_migrations makes exactly the table the model declares, with its partial
unique index (one unfinished migration per machine), and its downgrade removes it."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from headnode.store.models import Base


def _ours(diff: Any) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    return any("migrations" in repr(item) for item in items)


def test_models_and_migration_agree(database_url: str) -> None:
    with engine_for(database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        uniques = {i["name"] for i in inspect(conn).get_indexes("migrations") if i["unique"]}
    assert [d for d in diffs if _ours(d)] == []
    assert uniques == {"uq_migrations_machine_unfinished"}


def test_downgrade_removes_the_table(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    with engine_for(url).connect() as conn:
        assert "migrations" in inspect(conn).get_table_names()
    command.downgrade(alembic_config(url), "0014_server_agent")
    with engine_for(url).connect() as conn:
        assert "migrations" not in inspect(conn).get_table_names()
