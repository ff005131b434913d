"""Servers in maintenance take no new machines; forgotten nodes' credentials are revoked

Revision ID: 0012_server_maintenance
Revises: 0011_image_boot
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_server_maintenance"
down_revision = "0011_image_boot"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a server default: existing servers are in service, and no table is
    # rebuilt on SQLite
    op.add_column("servers", sa.Column("maintenance", sa.Boolean(), nullable=False,
                                       server_default=sa.false()))
    op.create_table(
        "revoked_nodes",
        sa.Column("uuid", sa.String(length=36), primary_key=True),
        sa.Column("hostname", sa.String(length=256), nullable=False, server_default=""),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revoked_nodes")
    # plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): no table is rebuilt
    op.execute("ALTER TABLE servers DROP COLUMN maintenance")
