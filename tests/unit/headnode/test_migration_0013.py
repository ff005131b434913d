"""Migration 0013_server_ssh adds exactly the servers' SSH columns the models declare;
servers that existed get no SSH host, port 22 and user root, and its downgrade removes them."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import create_engine, text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from tests.support.migrations import OLD_SERVER, columns_of, model_drift

COLUMNS = {("servers", "ssh_host"), ("servers", "ssh_port"), ("servers", "ssh_user")}


def _columns(url: str) -> dict[tuple[str, str], Any]:
    return columns_of(url, "servers")


def test_models_and_migration_agree(database_url: str) -> None:
    assert model_drift(database_url, COLUMNS) == []
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
        conn.execute(OLD_SERVER)
    upgrade(url, "0013_server_ssh")
    with engine_for(url).connect() as conn:
        rows = conn.execute(text("SELECT ssh_host, ssh_port, ssh_user FROM servers")).all()
    assert [tuple(r) for r in rows] == [(None, 22, "root")]

    command.downgrade(alembic_config(url), "0011_image_boot")
    assert not COLUMNS & set(_columns(url))
