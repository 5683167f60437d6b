"""withdrawals.intent_seal: HMAC of the requested intent, checked before any key signs

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("intent_seal", sa.String(), nullable=True))


def downgrade() -> None:
    op.drop_column("withdrawals", "intent_seal")
