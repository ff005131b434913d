"""A machine keeps the affinity rules it was created with, so that moving it (a migration,
an evacuation) places it by the same rules

Revision ID: 0016_machine_affinity
Revises: 0015_migrations
"""
import sqlalchemy as sa
from alembic import op

revision = "0016_machine_affinity"
down_revision = "0015_migrations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("machines", sa.Column("affinity", sa.JSON(), nullable=False,
                                        server_default="[]"))


def downgrade() -> None:
    op.drop_column("machines", "affinity")
