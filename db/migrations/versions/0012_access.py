"""access: users (roles, blocks), hashed API keys, authorized withdrawal actions and holds,
frozen wallets

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("roles", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("status", sa.String(), nullable=False, server_default="ACTIVE"),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("blocked_by", sa.String(), nullable=True),
        sa.Column("blocked_reason", sa.String(), nullable=True),
        sa.Column("oidc_issuer", sa.String(), nullable=True),
        sa.Column("oidc_subject", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("key_hash", sa.String(), nullable=False, unique=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("scopes", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("ip_allowlist", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_ip", sa.String(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_by", sa.String(), nullable=True),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_api_keys_prefix", "api_keys", ["prefix"])
    op.create_index("ix_api_keys_owner", "api_keys", ["owner"])
    op.create_table(
        "withdrawal_actions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("withdrawal_id", sa.String(), sa.ForeignKey("withdrawals.id"), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("actor_roles", postgresql.JSONB(), nullable=False, server_default="[]"),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False, server_default=""),
        sa.Column("state", sa.String(), nullable=False, server_default="ACCEPTED"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_withdrawal_actions_withdrawal_id", "withdrawal_actions", ["withdrawal_id"])
    op.create_table(
        "withdrawal_holds",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("withdrawal_id", sa.String(), sa.ForeignKey("withdrawals.id"), nullable=False),
        sa.Column("placed_by", sa.String(), nullable=False),
        sa.Column("placed_as", sa.String(), nullable=False),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False, server_default=""),
        sa.Column("batch", sa.String(), nullable=True),
        sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_by", sa.String(), nullable=True),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", postgresql.JSONB(), nullable=False, server_default="{}"),
    )
    op.create_index("ix_withdrawal_holds_withdrawal_id", "withdrawal_holds", ["withdrawal_id"])
    op.add_column("wallets", sa.Column("frozen_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("wallets", sa.Column("frozen_by", sa.String(), nullable=True))
    op.add_column("wallets", sa.Column("frozen_reason", sa.String(), nullable=True))


def downgrade() -> None:
    for column in ("frozen_reason", "frozen_by", "frozen_at"):
        op.drop_column("wallets", column)
    op.drop_table("withdrawal_holds")
    op.drop_table("withdrawal_actions")
    op.drop_table("api_keys")
    op.drop_table("users")
