"""Migration 0013_server_ssh adds exactly the servers' SSH columns the models declare;
servers that existed get no SSH host, port 22 and user root, and its downgrade removes them."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from headnode.store.models import Base

COLUMNS = {("servers", "ssh_host"), ("servers", "ssh_port"), ("servers", "ssh_user")}


def _touches_ours(diff: Any) -> bool:
    items = diff if isinstance(diff, list) else [diff]
    # ("add_column", schema, table, Column) or ("modify_*", schema, table, column, ...)
    return any(len(item) > 3 and (item[2], getattr(item[3], "name", item[3])) in COLUMNS
               for item in items)


def _columns(url: str) -> dict[tuple[str, str], Any]:
    with engine_for(url).connect() as conn:
        return {("servers", c["name"]): c for c in inspect(conn).get_columns("servers")}


def test_models_and_migration_agree(database_url: str) -> None:
    with engine_for(database_url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if _touches_ours(d)] == []
    columns = _columns(database_url)
    assert set(columns) >= COLUMNS
    assert columns[("servers", "ssh_host")]["nullable"]
    assert not columns[("servers", "ssh_port")]["nullable"]
    assert not columns[("servers", "ssh_user")]["nullable"]


def test_existing_servers_get_no_host_and_downgrade_removes_the_columns(
        tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url, "0011_image_boot")
    with create_engine(url).begin() as conn:
        conn.execute(text(
            "INSERT INTO servers (uuid, hostname, status, setup, reserved, headnode, backend,"
            " traits, sysinfo, ram_mb, cpus, disk_mb, ram_inflight_mb, disk_inflight_mb,"
            " cpu_inflight, ram_committed_mb, disk_committed_mb, cpu_committed, machine_count,"
            " pool_used_mb, created_at, updated_at) VALUES ('s', 'cn1', 'running', 1, 0, 0,"
            " 'sim', '{}', '{}', 1024, 1, 1024, 0, 0, 0, 0, 0, 0, 0, 0,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
    upgrade(url, "0013_server_ssh")
    with engine_for(url).connect() as conn:
        rows = conn.execute(text("SELECT ssh_host, ssh_port, ssh_user FROM servers")).all()
    assert [tuple(r) for r in rows] == [(None, 22, "root")]

    command.downgrade(alembic_config(url), "0011_image_boot")
    assert not COLUMNS & set(_columns(url))
