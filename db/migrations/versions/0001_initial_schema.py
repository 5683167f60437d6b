"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 22:24:00.331738
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keystore_keys",
        sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("scheme", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("public_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(), nullable=False),
        sa.Column("dek_nonce", sa.LargeBinary(), nullable=False),
        sa.Column("kek_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "sequence_claims",
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sender", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("withdrawal_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain", "sender", "sequence"),
    )
    op.create_index(op.f("ix_sequence_claims_withdrawal_id"), "sequence_claims", ["withdrawal_id"], unique=False)
    op.create_table(
        "wallets",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("label", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("signer_backend", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("key_ref", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("public_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "chain", "idempotency_key", name="uq_wallets_idempotency"),
    )
    op.create_index(op.f("ix_wallets_address"), "wallets", ["address"], unique=False)
    op.create_index(op.f("ix_wallets_owner"), "wallets", ["owner"], unique=False)
    op.create_index(
        "uq_wallets_live_label", "wallets", ["owner", "chain", "label"], unique=True, postgresql_where=sa.text("status IN ('CREATING', 'ACTIVE')")
    )
    op.create_table(
        "withdrawals",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("asset", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("destination", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("error_code", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("error_message", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("idempotency_key", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("tx_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("nonce", sa.BigInteger(), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("fee_paid", sa.Numeric(precision=78, scale=0), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["wallet_id"],
            ["wallets.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_withdrawals_idempotency"),
    )
    op.create_index(op.f("ix_withdrawals_owner"), "withdrawals", ["owner"], unique=False)
    op.create_index(op.f("ix_withdrawals_status"), "withdrawals", ["status"], unique=False)
    op.create_index(op.f("ix_withdrawals_wallet_id"), "withdrawals", ["wallet_id"], unique=False)
    op.create_table(
        "reservations",
        sa.Column("withdrawal_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("wallet_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("asset", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("fee_amount", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["withdrawal_id"],
            ["withdrawals.id"],
        ),
        sa.PrimaryKeyConstraint("withdrawal_id"),
    )
    op.create_index(op.f("ix_reservations_wallet_id"), "reservations", ["wallet_id"], unique=False)
    op.create_table(
        "transfer_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("withdrawal_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("chain", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sender", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=True),
        sa.Column("tx_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("raw_tx", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("fee_params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("max_fee", sa.Numeric(precision=78, scale=0), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("broadcast_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["withdrawal_id"],
            ["withdrawals.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tx_hash"),
    )
    op.create_index(op.f("ix_transfer_attempts_withdrawal_id"), "transfer_attempts", ["withdrawal_id"], unique=False)
    op.create_table(
        "withdrawal_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("withdrawal_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["withdrawal_id"],
            ["withdrawals.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_withdrawal_events_withdrawal_id"), "withdrawal_events", ["withdrawal_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_withdrawal_events_withdrawal_id"), table_name="withdrawal_events")
    op.drop_table("withdrawal_events")
    op.drop_index(op.f("ix_transfer_attempts_withdrawal_id"), table_name="transfer_attempts")
    op.drop_table("transfer_attempts")
    op.drop_index(op.f("ix_reservations_wallet_id"), table_name="reservations")
    op.drop_table("reservations")
    op.drop_index(op.f("ix_withdrawals_wallet_id"), table_name="withdrawals")
    op.drop_index(op.f("ix_withdrawals_status"), table_name="withdrawals")
    op.drop_index(op.f("ix_withdrawals_owner"), table_name="withdrawals")
    op.drop_table("withdrawals")
    op.drop_index("uq_wallets_live_label", table_name="wallets", postgresql_where=sa.text("status IN ('CREATING', 'ACTIVE')"))
    op.drop_index(op.f("ix_wallets_owner"), table_name="wallets")
    op.drop_index(op.f("ix_wallets_address"), table_name="wallets")
    op.drop_table("wallets")
    op.drop_index(op.f("ix_sequence_claims_withdrawal_id"), table_name="sequence_claims")
    op.drop_table("sequence_claims")
    op.drop_table("keystore_keys")
