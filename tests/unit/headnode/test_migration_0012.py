"""Migration 0012_server_maintenance adds exactly the maintenance column and the revoked
nodes' table the models declare; servers that existed are in service, and its downgrade
removes both."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import create_engine, inspect, text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from tests.support.migrations import OLD_SERVER, columns_of, model_drift

TABLE = "revoked_nodes"


def test_models_and_migration_agree(database_url: str) -> None:
    assert model_drift(database_url, {("servers", "maintenance")}, {TABLE}) == []
    columns = columns_of(database_url, "servers", TABLE)
    assert not columns[("servers", "maintenance")]["nullable"]
    assert {name for table, name in columns if table == TABLE} == {"uuid", "hostname",
                                                                   "revoked_at"}


def test_existing_servers_are_in_service_and_downgrade_removes_it_all(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url, "0011_image_boot")
    with create_engine(url).begin() as conn:
        conn.execute(OLD_SERVER)
    upgrade(url, "0012_server_maintenance")
    with engine_for(url).connect() as conn:
        assert conn.execute(text("SELECT maintenance FROM servers")).scalars().all() == [0]
        assert TABLE in inspect(conn).get_table_names()

    command.downgrade(alembic_config(url), "0011_image_boot")
    with engine_for(url).connect() as conn:
        assert "maintenance" not in {c["name"] for c in inspect(conn).get_columns("servers")}
        assert TABLE not in inspect(conn).get_table_names()
