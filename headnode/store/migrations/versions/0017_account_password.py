"""An account may have a password (an argon2 hash), with which its tenant signs in to the
console; None: no console sign-in for that account

Revision ID: 0017_account_password
Revises: 0016_machine_affinity
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_account_password"
down_revision = "0016_machine_affinity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("password_hash", sa.String(length=256),
                                        nullable=True))


def downgrade() -> None:
    op.drop_column("accounts", "password_hash")
