"""Run Alembic migrations from code (``sdc headnode db upgrade``, ``sdc up``, test fixtures)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError

MIGRATIONS = Path(__file__).parent / "migrations"


class UnknownRevision(Exception):
    """The database was migrated by a newer version of this code (a revision we lack)."""


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


def applied_heads(url: str) -> tuple[str, ...]:
    """The revisions the database is at (one per branch); () for an empty database. A
    SQLite file that does not exist is empty, and is not created by asking."""
    from alembic.runtime.migration import MigrationContext

    from headnode.store.db import make_engine

    if _missing_sqlite_file(url):
        return ()
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def pending(url: str) -> list[str]:
    """The revisions still to apply, by id ([] when the schema is up to date)."""
    return unapplied(applied_heads(url))


def unapplied(heads: tuple[str, ...]) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(""))
    done: set[str] = set()
    if heads:
        try:
            done = {rev.revision for rev in script.iterate_revisions(heads, "base")}
        except (CommandError, RevisionError) as exc:
            raise UnknownRevision(", ".join(heads)) from exc
    return sorted(rev.revision for rev in script.walk_revisions() if rev.revision not in done)


def _missing_sqlite_file(url: str) -> bool:
    if not url.startswith("sqlite"):
        return False
    path = url.split("///", 1)[-1]
    return bool(path) and path != ":memory:" and not Path(path).exists()
