"""placement aggregates (capped/uncapped counts, imported images) and capacity history

Revision ID: 0004
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

LIVE = "reservations.server_uuid = servers.uuid AND reservations.state IN ('held', 'committed')"


def upgrade() -> None:
    for column in ("capped_count", "uncapped_count", "images_mb"):
        op.add_column("servers", sa.Column(column, sa.Integer(), nullable=False,
                                           server_default="0"))
    # Existing reservations already hold machines: count them by capness.
    op.execute(f"UPDATE servers SET capped_count = (SELECT count(*) FROM reservations "
               f"WHERE {LIVE} AND reservations.cpu > 0), "
               f"uncapped_count = (SELECT count(*) FROM reservations "
               f"WHERE {LIVE} AND reservations.cpu <= 0)")
    op.create_table(
        "server_images",
        sa.Column("server_uuid", sa.String(length=36), sa.ForeignKey("servers.uuid"),
                  primary_key=True),
        sa.Column("image_uuid", sa.String(length=36), primary_key=True),
        sa.Column("size_mb", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    big = sa.BigInteger()
    op.create_table(
        "capacity_snapshots",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("servers", sa.Integer(), nullable=False),
        sa.Column("placeable_servers", sa.Integer(), nullable=False),
        sa.Column("machines", sa.Integer(), nullable=False),
        *[sa.Column(f"{resource}_{part}{unit}", big, nullable=False)
          for resource, unit in (("ram", "_mb"), ("cpu", ""), ("disk", "_mb"))
          for part in ("total", "provisioned", "reserved", "free")],
    )
    op.create_index("ix_capacity_snapshots_taken_at", "capacity_snapshots", ["taken_at"])


def downgrade() -> None:
    op.drop_index("ix_capacity_snapshots_taken_at", table_name="capacity_snapshots")
    op.drop_table("capacity_snapshots")
    op.drop_table("server_images")
    for column in ("images_mb", "uncapped_count", "capped_count"):
        op.drop_column("servers", column)
