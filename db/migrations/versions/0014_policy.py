"""policy engine: versioned policy document, decisions per withdrawal, rolling-window spends,
address books

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BASE_UNITS = sa.Numeric(78, 0)


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("version", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("summary", sa.String(), nullable=False),
        sa.Column("document", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "policy_decisions",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("withdrawal_id", sa.String(), sa.ForeignKey("withdrawals.id"), nullable=False),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("rule_name", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("quorum", postgresql.JSONB(), nullable=True),
        sa.Column("details", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_policy_decisions_withdrawal_id", "policy_decisions", ["withdrawal_id"])
    op.create_index("uq_policy_decisions_decide", "policy_decisions", ["withdrawal_id"], unique=True, postgresql_where=sa.text("stage = 'DECIDE'"))
    op.create_table(
        "policy_spends",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("withdrawal_id", sa.String(), sa.ForeignKey("withdrawals.id"), nullable=False, unique=True),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("wallet_id", sa.String(), nullable=False),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("asset", sa.String(), nullable=False),
        sa.Column("amount", BASE_UNITS, nullable=False),
        sa.Column("approval_required", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("internal", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("state", sa.String(), nullable=False, server_default="ACTIVE"),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_policy_spends_window", "policy_spends", ["chain", "asset", "at"])
    op.create_index("ix_policy_spends_owner", "policy_spends", ["owner"])
    op.create_index("ix_policy_spends_wallet_id", "policy_spends", ["wallet_id"])
    op.create_table(
        "address_book_entries",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("chain", sa.String(), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("label", sa.String(), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("usable_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(), nullable=True),
    )
    op.create_index("ix_address_book_entries_owner", "address_book_entries", ["owner"])
    op.create_index(
        "uq_address_book_live",
        "address_book_entries",
        ["owner", "chain", "address"],
        unique=True,
        postgresql_where=sa.text("removed_at IS NULL"),
    )
    op.create_table(
        "address_book_approvals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("entry_id", sa.String(), sa.ForeignKey("address_book_entries.id"), nullable=False),
        sa.Column("approver", sa.String(), nullable=False),
        sa.Column("approver_roles", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("entry_id", "approver", name="uq_address_book_approvals"),
    )
    op.create_index("ix_address_book_approvals_entry_id", "address_book_approvals", ["entry_id"])
    # The decision a withdrawal was judged by (the full story is in policy_decisions).
    op.add_column("withdrawals", sa.Column("policy_version", sa.Integer(), nullable=True))
    op.add_column("withdrawals", sa.Column("policy_rule_id", sa.String(), nullable=True))
    op.add_column("withdrawals", sa.Column("policy_outcome", sa.String(), nullable=True))


def downgrade() -> None:
    for column in ("policy_outcome", "policy_rule_id", "policy_version"):
        op.drop_column("withdrawals", column)
    op.drop_table("address_book_approvals")
    op.drop_table("address_book_entries")
    op.drop_table("policy_spends")
    op.drop_table("policy_decisions")
    op.drop_table("policy_versions")
