"""reconciliation: transfers discovered on chain, discovery cursors, re-verified withdrawals,
reports and events

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_transfers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("account", sa.String(), nullable=False),
        sa.Column("asset", sa.String(), nullable=False),
        sa.Column("direction", sa.String(), nullable=False),
        sa.Column("amount", sa.Numeric(78, 0), nullable=False),
        sa.Column("fee", sa.Numeric(78, 0), nullable=False, server_default="0"),
        sa.Column("event_key", sa.String(), nullable=False),
        sa.Column("counterparty", sa.String(), nullable=True),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", sa.String(), nullable=True),
        sa.Column("detail", sa.String(), nullable=False, server_default=""),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("chain", "tx_hash", "account", "asset", "direction", "event_key", name="uq_chain_transfers_event"),
    )
    op.create_index("ix_chain_transfers_chain_account", "chain_transfers", ["chain", "account"])
    op.create_index("ix_chain_transfers_chain_block", "chain_transfers", ["chain", "block_number"])
    op.create_table(
        "reconciliation_cursors",
        sa.Column("chain", sa.String(), primary_key=True),
        sa.Column("scope", sa.String(), primary_key=True),
        sa.Column("cursor", sa.String(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "reconciliation_checks",
        sa.Column("withdrawal_id", sa.String(), sa.ForeignKey("withdrawals.id"), primary_key=True),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("tx_hash", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False, server_default=""),
        sa.Column("side_cost", sa.Numeric(78, 0), nullable=True),
        sa.Column("first_checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reconciliation_checks_chain", "reconciliation_checks", ["chain"])
    op.create_table(
        "reconciliation_reports",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("run_key", sa.String(), nullable=False, unique=True),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("point", postgresql.JSONB(), nullable=False),
        sa.Column("rows", postgresql.JSONB(), nullable=False),
        sa.Column("vanished", postgresql.JSONB(), nullable=False),
        sa.Column("unexplained", postgresql.JSONB(), nullable=False),
        sa.Column("summary", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reconciliation_reports_chain", "reconciliation_reports", ["chain"])
    op.create_table(
        "reconciliation_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("report_id", sa.String(), nullable=False),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("wallet_id", sa.String(), nullable=True),
        sa.Column("asset", sa.String(), nullable=True),
        sa.Column("amount", sa.Numeric(78, 0), nullable=True),
        sa.Column("tx_hash", sa.String(), nullable=True),
        sa.Column("withdrawal_id", sa.String(), nullable=True),
        sa.Column("detail", postgresql.JSONB(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_reconciliation_events_report_id", "reconciliation_events", ["report_id"])
    op.create_index("ix_reconciliation_events_chain", "reconciliation_events", ["chain"])


def downgrade() -> None:
    op.drop_table("reconciliation_events")
    op.drop_table("reconciliation_reports")
    op.drop_table("reconciliation_checks")
    op.drop_table("reconciliation_cursors")
    op.drop_table("chain_transfers")
