"""NICs as resources: networks' MTU and routes; each NIC's interface, state and
anti-spoofing settings

Revision ID: 0010_nics
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_nics"
down_revision = "0009"
branch_labels = None
depends_on = None

INTERFACE_INDEX = "uq_nics_machine_interface"
FLAGS = ("allow_ip_spoofing", "allow_mac_spoofing", "allow_dhcp_spoofing",
         "allow_restricted_traffic")

# The NICs a machine has now become net0, net1, ... in the order the machine object lists
# them (primary first, then oldest first, the mac breaking ties).
_INTERFACES = sa.text("""
UPDATE nics SET interface = 'net' || CAST((
    SELECT COUNT(*) FROM nics o WHERE o.machine_uuid = nics.machine_uuid AND (
        (o."primary" AND NOT nics."primary")
        OR (o."primary" = nics."primary" AND (o.created_at < nics.created_at
            OR (o.created_at = nics.created_at AND o.mac < nics.mac))))
) AS TEXT)
""")
# An existing NIC is plugged: it is as its machine is (a provision under way: provisioning)
_STATES = sa.text("""
UPDATE nics SET state = CASE (SELECT m.state FROM machines m WHERE m.uuid = nics.machine_uuid)
    WHEN 'stopped' THEN 'stopped' WHEN 'provisioning' THEN 'provisioning' ELSE 'running' END
""")


def upgrade() -> None:
    # Columns added NOT NULL with a server default, and a unique index rather than a
    # constraint: no table is rebuilt on SQLite (networks could not be dropped and made
    # again while NICs reference it).
    op.add_column("networks", sa.Column("mtu", sa.Integer(), nullable=False,
                                        server_default="1500"))
    op.add_column("networks", sa.Column("routes", sa.JSON(), nullable=False,
                                        server_default=sa.text("'{}'")))
    for flag in FLAGS:
        op.add_column("nics", sa.Column(flag, sa.Boolean(), nullable=False,
                                        server_default=sa.false()))
    op.add_column("nics", sa.Column("allowed_ips", sa.JSON(), nullable=False,
                                    server_default=sa.text("'[]'")))
    op.add_column("nics", sa.Column("state", sa.String(length=16), nullable=False,
                                    server_default="running"))
    op.add_column("nics", sa.Column("interface", sa.String(length=8), nullable=True))
    op.execute(_INTERFACES)
    op.execute(_STATES)
    op.create_index(INTERFACE_INDEX, "nics", ["machine_uuid", "interface"], unique=True)


def downgrade() -> None:
    op.drop_index(INTERFACE_INDEX, table_name="nics")
    # plain ALTER TABLE ... DROP COLUMN (SQLite has it since 3.35): no table is rebuilt
    for name in ("interface", "state", "allowed_ips", *FLAGS):
        op.execute(f"ALTER TABLE nics DROP COLUMN {name}")
    for name in ("routes", "mtu"):
        op.execute(f"ALTER TABLE networks DROP COLUMN {name}")
