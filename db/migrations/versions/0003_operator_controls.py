"""operator controls: pause/approval/cancel fields; attempt purpose (cancellation replacements)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("withdrawals", sa.Column("paused_by", sa.String(), nullable=True))
    op.add_column("withdrawals", sa.Column("paused_reason", sa.String(), nullable=True))
    op.add_column("withdrawals", sa.Column("approved_by", sa.String(), nullable=True))
    op.add_column("withdrawals", sa.Column("cancel_requested_by", sa.String(), nullable=True))
    op.add_column("transfer_attempts", sa.Column("purpose", sa.String(), nullable=False, server_default="TRANSFER"))


def downgrade() -> None:
    op.drop_column("transfer_attempts", "purpose")
    for column in ("cancel_requested_by", "approved_by", "paused_reason", "paused_by", "paused"):
        op.drop_column("withdrawals", column)
