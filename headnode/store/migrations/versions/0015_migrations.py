"""Machine migrations between servers: one record per migration, at most one unfinished per
machine

Revision ID: 0015_migrations
Revises: 0014_server_agent
"""
import sqlalchemy as sa
from alembic import op

revision = "0015_migrations"
down_revision = "0014_server_agent"
branch_labels = None
depends_on = None

UNFINISHED = "finished_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "migrations",
        sa.Column("uuid", sa.String(length=36), primary_key=True),
        sa.Column("machine_uuid", sa.String(length=36), sa.ForeignKey("machines.uuid"),
                  nullable=False),
        sa.Column("owner_uuid", sa.String(length=36), nullable=False),
        sa.Column("source_server_uuid", sa.String(length=36), nullable=False),
        sa.Column("target_server_uuid", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("job_uuid", sa.String(length=36), nullable=True),
        sa.Column("syncs", sa.Integer(), nullable=False),
        sa.Column("last_snapshot", sa.String(length=64), nullable=True),
        sa.Column("total_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sent_bytes", sa.BigInteger(), nullable=False),
        sa.Column("rate_bps", sa.BigInteger(), nullable=True),
        sa.Column("downtime_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("target_held", sa.JSON(), nullable=True),
        sa.Column("source_held", sa.JSON(), nullable=True),
        sa.Column("was_running", sa.Boolean(), nullable=True),
        sa.Column("progress_history", sa.JSON(), nullable=False),
        sa.Column("stream_token", sa.String(length=128), nullable=True),
        sa.Column("stop_sent_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_migrations_machine", "migrations", ["machine_uuid", "created_at"])
    op.create_index("ix_migrations_owner", "migrations", ["owner_uuid"])
    op.create_index("uq_migrations_machine_unfinished", "migrations", ["machine_uuid"],
                    unique=True, postgresql_where=sa.text(UNFINISHED),
                    sqlite_where=sa.text(UNFINISHED))


def downgrade() -> None:
    op.drop_table("migrations")
