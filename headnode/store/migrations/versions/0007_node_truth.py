"""node truth: each server's last reported machines; machines a report left out

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MISSING = "missing_since IS NOT NULL"


def upgrade() -> None:
    # {machine uuid: state} as the server's last status report listed them (its time is
    # servers.last_status_at); NULL until the first report after this migration
    op.add_column("servers", sa.Column("reported_machines", sa.JSON(), nullable=True))
    # a report left the machine out: when (the report's time), and when the node was last
    # asked about it; NULL when nothing is suspected
    op.add_column("machines", sa.Column("missing_since", sa.DateTime(timezone=True),
                                        nullable=True))
    op.add_column("machines", sa.Column("missing_asked_at", sa.Float(), nullable=True))
    # when the node answered that it does not have it (the head node's clock)
    op.add_column("machines", sa.Column("missing_confirmed_at", sa.Float(), nullable=True))
    op.create_index("ix_machines_missing", "machines", ["missing_since"],
                    postgresql_where=sa.text(MISSING), sqlite_where=sa.text(MISSING))


def downgrade() -> None:
    op.drop_index("ix_machines_missing", table_name="machines")
    with op.batch_alter_table("machines") as batch:
        batch.drop_column("missing_confirmed_at")
        batch.drop_column("missing_asked_at")
        batch.drop_column("missing_since")
    with op.batch_alter_table("servers") as batch:
        batch.drop_column("reported_machines")
