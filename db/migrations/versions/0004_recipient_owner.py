"""P2P: the custody user a withdrawal paid, when addressed by handle

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("recipient_owner", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("withdrawals", "recipient_owner")
