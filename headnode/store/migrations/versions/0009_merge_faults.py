"""join the node-truth (0007) and job-cancel (0008) branches

Revision ID: 0009
Revises: 0007, 0008
"""

revision = "0009"
down_revision = ("0007", "0008")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
