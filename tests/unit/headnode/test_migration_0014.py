"""Migration 0014_server_agent joins the two heads before it and adds exactly the servers'
agent prefix the models declare; servers that existed get none ("/"), and its downgrade
removes it."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from tests.support.migrations import OLD_SERVER, columns_of, model_drift

COLUMNS = {("servers", "agent_prefix")}


def test_models_and_migration_agree(database_url: str) -> None:
    assert model_drift(database_url, COLUMNS) == []
    assert columns_of(database_url, "servers")[("servers", "agent_prefix")]["nullable"]


def test_it_merges_the_maintenance_and_ssh_heads(tmp_path: Any) -> None:
    script = ScriptDirectory.from_config(alembic_config(f"sqlite:///{tmp_path / 'x.db'}"))
    assert set(script.get_revision("0014_server_agent").down_revision) == {
        "0012_server_maintenance", "0013_server_ssh"}


def test_existing_servers_get_no_prefix_and_downgrade_removes_it(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    upgrade(url, "0011_image_boot")
    with create_engine(url).begin() as conn:
        conn.execute(OLD_SERVER)
    upgrade(url, "0014_server_agent")
    with engine_for(url).connect() as conn:
        rows = conn.execute(text("SELECT agent_prefix, maintenance, ssh_port FROM servers"))
        assert [tuple(r) for r in rows] == [(None, False, 22)]

    command.downgrade(alembic_config(url), "0013_server_ssh")
    assert not COLUMNS & set(columns_of(url, "servers"))
