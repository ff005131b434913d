"""Migration 0012_server_maintenance adds exactly the maintenance column and the revoked
nodes' table the models declare; servers that existed are in service, and its downgrade
removes both."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from headnode.store.models import Base

TABLE = "revoked_nodes"


def _touches_ours(diff: Any) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    # ("add_table", Table), ("add_column", schema, table, Column), ("modify_*", schema,
    # table, column, ...)
    return any(getattr(item[1], "name", None) == TABLE
               or (len(item) > 3 and item[2] == TABLE)
               or (len(item) > 3 and (item[2], getattr(item[3], "name", item[3]))
                   == ("servers", "maintenance"))
               for item in items)


def test_models_and_migration_agree(database_url: str) -> None:
    with engine_for(database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        columns = {c["name"]: c for c in inspect(conn).get_columns("servers")}
        revoked = {c["name"] for c in inspect(conn).get_columns(TABLE)}
    assert [d for d in diffs if _touches_ours(d)] == []
    assert not columns["maintenance"]["nullable"]
    assert revoked == {"uuid", "hostname", "revoked_at"}


def test_existing_servers_are_in_service_and_downgrade_removes_it_all(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url, "0011_image_boot")
    with create_engine(url).begin() as conn:
        conn.execute(text(
            "INSERT INTO servers (uuid, hostname, status, setup, reserved, headnode, backend,"
            " traits, sysinfo, ram_mb, cpus, disk_mb, ram_inflight_mb, disk_inflight_mb,"
            " cpu_inflight, ram_committed_mb, disk_committed_mb, cpu_committed,"
            " machine_count, pool_used_mb, created_at, updated_at) VALUES ('s', 'cn1',"
            " 'running', 1, 0, 0, 'sim', '{}', '{}', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
    upgrade(url, "0012_server_maintenance")
    with engine_for(url).connect() as conn:
        assert conn.execute(text("SELECT maintenance FROM servers")).scalars().all() == [0]
        assert TABLE in inspect(conn).get_table_names()

    command.downgrade(alembic_config(url), "0011_image_boot")
    with engine_for(url).connect() as conn:
        assert "maintenance" not in {c["name"] for c in inspect(conn).get_columns("servers")}
        assert TABLE not in inspect(conn).get_table_names()
