"""withdrawal memo (Stellar text/id/hash memos; SEP-29)

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("memo_type", sa.String(), nullable=True))
    op.add_column("withdrawals", sa.Column("memo_value", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("withdrawals", "memo_value")
    op.drop_column("withdrawals", "memo_type")
