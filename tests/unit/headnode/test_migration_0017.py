"""Migration 0017_account_password adds exactly the accounts' password_hash column the models
declare, nullable (the accounts that existed have no password: no console sign-in until an
operator gives one); its downgrade removes it."""

from __future__ import annotations

from typing import Any

from alembic import command
from sqlalchemy import text

from headnode.store.db import engine_for
from headnode.store.migrate import alembic_config, upgrade
from tests.support.migrations import columns_of, model_drift

COLUMNS = {("accounts", "password_hash")}


def test_models_and_migration_agree(database_url: str) -> None:
    assert model_drift(database_url, COLUMNS) == []
    assert columns_of(database_url, "accounts")[("accounts", "password_hash")]["nullable"]


def test_an_existing_account_has_no_password_and_downgrade_removes_it(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'sdc.db'}"
    config = alembic_config(url)
    command.upgrade(config, "0016_machine_affinity")
    with engine_for(url).begin() as conn:
        conn.execute(text(
            "INSERT INTO accounts (uuid, login, email, operator, created_at, updated_at)"
            " VALUES ('a', 'alice', 'a@example.com', 0, '2026-01-01 00:00:00',"
            " '2026-01-01 00:00:00')"))
    upgrade(url)
    with engine_for(url).connect() as conn:
        assert conn.execute(text("SELECT password_hash FROM accounts")).all() == [(None,)]
    command.downgrade(config, "0016_machine_affinity")
    assert not COLUMNS & set(columns_of(url, "accounts"))
    with engine_for(url).connect() as conn:
        assert conn.execute(text("SELECT login FROM accounts")).all() == [("alice",)]
