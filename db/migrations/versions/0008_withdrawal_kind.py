"""withdrawals.kind: TRANSFER, or TRUSTLINE (a wallet's own change_trust on Stellar)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("kind", sa.String(), nullable=False, server_default="TRANSFER"))


def downgrade() -> None:
    op.drop_column("withdrawals", "kind")
