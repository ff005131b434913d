"""INSERT ... ON CONFLICT DO NOTHING RETURNING, on PostgreSQL (production) and SQLite
(``sdc up``) alike: a row that a unique key refuses is not an error, just no row back. It
takes no savepoint, which the error would need to keep the transaction usable."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from headnode.services.statements import per_thread_cache


@per_thread_cache
def _statement(table: Table, returning: str, dialect: str) -> Any:
    # Built once per table and dialect; the values are bound per call.
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing().returning(table.c[returning])


def insert_unless_taken(session: Session, table: Table, values: dict[str, Any],
                        returning: str) -> bool:
    """Insert one row of ``values`` (every column that has no default); False when a unique
    key already holds it (committed, or inserted by a transaction this one waited for)."""
    statement = _statement(table, returning, session.get_bind().dialect.name)
    return session.execute(statement, values).first() is not None
