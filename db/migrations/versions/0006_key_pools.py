"""key pools: tiered pool keys (HODL / Bank / Explorer), rebalance runs, sweep withdrawals

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("withdrawals", sa.Column("sweep", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("withdrawals", sa.Column("requested_by", sa.String(), nullable=True))
    op.create_table(
        "pool_keys",
        sa.Column("wallet_id", sa.String(), sa.ForeignKey("wallets.id"), primary_key=True),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("tier", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("funded_by", sa.String(), nullable=True),
        sa.Column("created_by_run", sa.String(), nullable=True),
        sa.Column("funding_withdrawal_id", sa.String(), nullable=True),
        sa.Column("recovery_withdrawal_id", sa.String(), nullable=True),
        sa.Column("lease_id", sa.String(), nullable=True),
        sa.Column("leased_by", sa.String(), nullable=True),
        sa.Column("leased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_withdrawal_id", sa.String(), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retired_reason", sa.String(), nullable=True),
        sa.Column("recovered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recovered_amount", sa.Numeric(78, 0), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("lease_id", name="uq_pool_keys_lease_id"),
    )
    op.create_index("ix_pool_keys_chain_tier_state", "pool_keys", ["chain", "tier", "state"])
    op.create_table(
        "pool_rebalances",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("result", postgresql.JSONB(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_pool_rebalances_chain_started", "pool_rebalances", ["chain", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_pool_rebalances_chain_started", table_name="pool_rebalances")
    op.drop_table("pool_rebalances")
    op.drop_index("ix_pool_keys_chain_tier_state", table_name="pool_keys")
    op.drop_table("pool_keys")
    op.drop_column("withdrawals", "requested_by")
    op.drop_column("withdrawals", "sweep")
