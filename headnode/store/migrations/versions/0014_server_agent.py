"""Join the maintenance (0012) and SSH (0013) branches; servers remember where their agent is
installed (the node's install prefix; null: "/", a real node)

Revision ID: 0014_server_agent
Revises: 0012_server_maintenance, 0013_server_ssh
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_server_agent"
down_revision = ("0012_server_maintenance", "0013_server_ssh")
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: no table is rebuilt on SQLite, and a server set up by hand has no prefix
    # recorded, which means the usual "/"
    op.add_column("servers", sa.Column("agent_prefix", sa.Text(), nullable=True))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): no table is rebuilt
    op.execute("ALTER TABLE servers DROP COLUMN agent_prefix")
