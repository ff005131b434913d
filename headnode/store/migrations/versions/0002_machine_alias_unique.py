"""machine aliases are unique per owner among machines that hold them

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

HOLDING = "state IN ('provisioning', 'running', 'stopped', 'unknown')"


def upgrade() -> None:
    op.create_index("uq_machines_owner_alias_live", "machines", ["owner_uuid", "alias"],
                    unique=True, postgresql_where=sa.text(HOLDING),
                    sqlite_where=sa.text(HOLDING))


def downgrade() -> None:
    op.drop_index("uq_machines_owner_alias_live", table_name="machines")
