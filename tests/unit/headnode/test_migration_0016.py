"""Migration 0016_machine_affinity adds exactly the machines' affinity column the models
declare, not null with an empty list for the machines that existed; its downgrade removes it."""

from __future__ import annotations

from typing import Any

from alembic import command

from headnode.store.migrate import alembic_config, upgrade
from tests.support.migrations import columns_of, model_drift

COLUMNS = {("machines", "affinity")}


def test_models_and_migration_agree(database_url: str) -> None:
    assert model_drift(database_url, COLUMNS) == []
    assert not columns_of(database_url, "machines")[("machines", "affinity")]["nullable"]


def test_downgrade_removes_it(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url)
    assert set(columns_of(url, "machines")) >= COLUMNS
    command.downgrade(alembic_config(url), "0015_migrations")
    assert not COLUMNS & set(columns_of(url, "machines"))
