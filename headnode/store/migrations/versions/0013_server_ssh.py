"""Servers get an SSH address (host, port, user): where the head node reaches the node

Revision ID: 0013_server_ssh
Revises: 0011_image_boot
"""
import sqlalchemy as sa
from alembic import op

revision = "0013_server_ssh"
down_revision = "0011_image_boot"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable, or NOT NULL with a server default: no table is rebuilt on SQLite, and
    # existing servers have no SSH host (exec reports them as such) and the usual port/user
    op.add_column("servers", sa.Column("ssh_host", sa.String(length=255), nullable=True))
    op.add_column("servers", sa.Column("ssh_port", sa.Integer(), nullable=False,
                                       server_default="22"))
    op.add_column("servers", sa.Column("ssh_user", sa.String(length=32), nullable=False,
                                       server_default="root"))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): no table is rebuilt
    for name in ("ssh_user", "ssh_port", "ssh_host"):
        op.execute(f"ALTER TABLE servers DROP COLUMN {name}")
