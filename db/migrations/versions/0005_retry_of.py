"""retries: a resubmission points at the FAILED withdrawal it retries

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("retry_of", sa.String(), nullable=True))
    op.create_index("ix_withdrawals_retry_of", "withdrawals", ["retry_of"])


def downgrade() -> None:
    op.drop_index("ix_withdrawals_retry_of", table_name="withdrawals")
    op.drop_column("withdrawals", "retry_of")
