"""Images say how they boot: an image's tags (IMGAPI's, ``default_user`` among them) and
init; a machine's metadata serial (the newest change of its node's metadata applied here)

Revision ID: 0011_image_boot
Revises: 0010_nics
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_image_boot"
down_revision = "0010_nics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NOT NULL with a server default and nullable columns: no table is rebuilt on SQLite
    op.add_column("images", sa.Column("tags", sa.JSON(), nullable=False,
                                      server_default=sa.text("'{}'")))
    op.add_column("images", sa.Column("init", sa.JSON(), nullable=True))
    op.add_column("machines", sa.Column("metadata_serial", sa.Integer(), nullable=True))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): no table is rebuilt
    op.execute("ALTER TABLE machines DROP COLUMN metadata_serial")
    for name in ("init", "tags"):
        op.execute(f"ALTER TABLE images DROP COLUMN {name}")
