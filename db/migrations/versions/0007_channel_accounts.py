"""Stellar channel accounts: the chain's channel set and each channel's single lease

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "channel_accounts",
        sa.Column("wallet_id", sa.String(), sa.ForeignKey("wallets.id"), primary_key=True),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("funding_withdrawal_id", sa.String(), nullable=True),
        sa.Column("leased_by", sa.String(), nullable=True),
        sa.Column("leased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("leased_by", name="uq_channel_accounts_leased_by"),
    )
    op.create_index("ix_channel_accounts_chain_state", "channel_accounts", ["chain", "state"])


def downgrade() -> None:
    op.drop_index("ix_channel_accounts_chain_state", table_name="channel_accounts")
    op.drop_table("channel_accounts")
