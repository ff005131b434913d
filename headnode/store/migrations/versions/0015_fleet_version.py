"""Servers that hold an image, found by the image: a create's fleet snapshot is shared by
the API process (services/fleet_cache.py) and asks per create only which servers hold the
requested image, which without this index would scan every server's images

Revision ID: 0015_fleet_version
Revises: 0014_server_agent
"""
from alembic import op

revision = "0015_fleet_version"
down_revision = "0014_server_agent"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_server_images_image", "server_images", ["image_uuid"])


def downgrade() -> None:
    op.drop_index("ix_server_images_image", table_name="server_images")
