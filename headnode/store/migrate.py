"""Run Alembic migrations from code (``sdc headnode db upgrade``, ``sdc up``, test fixtures)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(url: str, revision: str = "heads") -> None:
    # "heads": features may add migrations on branches of their own (each revises the last
    # common revision); a merge revision joins them when it is convenient.
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from headnode.store.db import make_engine

    with make_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
