"""SSH keys of accounts; networks and the NICs (IP leases) of machines

Revision ID: 0005
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("default_network_uuid", sa.String(length=36),
                                        nullable=True))
    op.create_table(
        "keys",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("account_uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("fingerprint_md5", sa.String(length=47), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(length=64), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_uuid"], ["accounts.uuid"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("uuid"),
        sa.UniqueConstraint("account_uuid", "name", name="uq_keys_account_name"),
        sa.UniqueConstraint("account_uuid", "fingerprint_sha256", name="uq_keys_account_sha256"),
    )
    op.create_index("ix_keys_account_md5", "keys", ["account_uuid", "fingerprint_md5"])
    op.create_table(
        "networks",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("subnet", sa.String(length=43), nullable=False),
        sa.Column("gateway", sa.String(length=45), nullable=True),
        sa.Column("provision_start_ip", sa.String(length=45), nullable=False),
        sa.Column("provision_end_ip", sa.String(length=45), nullable=False),
        sa.Column("resolvers", sa.JSON(), nullable=False),
        sa.Column("vlan_id", sa.Integer(), nullable=False),
        sa.Column("nic_tag", sa.String(length=64), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("owner_uuid", sa.String(length=36), nullable=True),
        sa.Column("description", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_uuid"], ["accounts.uuid"]),
        sa.PrimaryKeyConstraint("uuid"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "nics",
        sa.Column("mac", sa.String(length=17), nullable=False),
        sa.Column("machine_uuid", sa.String(length=36), nullable=False),
        sa.Column("network_uuid", sa.String(length=36), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=False),
        sa.Column("ip_num", sa.BigInteger(), nullable=False),
        sa.Column("primary", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["machine_uuid"], ["machines.uuid"]),
        sa.ForeignKeyConstraint(["network_uuid"], ["networks.uuid"]),
        sa.PrimaryKeyConstraint("mac"),
        sa.UniqueConstraint("network_uuid", "ip", name="uq_nics_network_ip"),
        sa.UniqueConstraint("network_uuid", "ip_num", name="uq_nics_network_ip_num"),
    )
    op.create_index("ix_nics_machine", "nics", ["machine_uuid"])


def downgrade() -> None:
    op.drop_index("ix_nics_machine", table_name="nics")
    op.drop_table("nics")
    op.drop_table("networks")
    op.drop_index("ix_keys_account_md5", table_name="keys")
    op.drop_table("keys")
    op.drop_column("accounts", "default_network_uuid")
