"""Access tables: users (roles, blocks), API keys (hashed, scoped), and the operator actions the
API authorized (approvals, cancellations, holds), which activities re-check before signing.

Roles belong to users, scopes to API keys: a request is allowed when its identity has both the
role and the scope a route asks for (api/permissions.py). Wallets and withdrawals keep their
`owner` column: it is a user id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.columns import timestamp_field as _ts


class User(SQLModel, table=True):
    """A person or system that owns wallets and acts on withdrawals. Created by an admin (API
    keys) or on a first `GET /v1/users/me` (OIDC); a block is an upsert, so a user can be blocked
    before they ever called."""

    __tablename__ = "users"
    __table_args__ = (sa.UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc"),)

    id: str = Field(primary_key=True)
    roles: list[str] = Field(default_factory=list, sa_type=JSONB)
    status: str = "ACTIVE"  # ACTIVE | BLOCKED
    blocked_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    blocked_by: str | None = None
    blocked_reason: str | None = None
    # Set for users who sign in through OIDC: the token's issuer and `sub` (an id is never
    # taken over by another issuer's subject, nor by a token for an API-key user).
    oidc_issuer: str | None = None
    oidc_subject: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ApiKey(SQLModel, table=True):
    """An API key: shown once at creation, stored as its SHA-256. `prefix` is public (listed,
    logged) and finds the row; the hash is compared in constant time."""

    __tablename__ = "api_keys"

    id: str = Field(primary_key=True)
    prefix: str = Field(index=True)
    key_hash: str = Field(unique=True)
    name: str
    owner: str = Field(foreign_key="users.id", index=True)
    scopes: list[str] = Field(default_factory=list, sa_type=JSONB)
    ip_allowlist: list[str] = Field(default_factory=list, sa_type=JSONB)  # CIDRs; empty: anywhere
    expires_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    last_used_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    last_used_ip: str | None = None
    revoked_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    revoked_by: str | None = None
    created_by: str
    created_at: datetime = _ts()


class WithdrawalAction(SQLModel, table=True):
    """An approval or cancellation the API authorized, with the identity that made it. Signing
    steps trust these rows, never the `by` of a Temporal signal or update."""

    __tablename__ = "withdrawal_actions"

    id: int | None = Field(default=None, primary_key=True)
    withdrawal_id: str = Field(foreign_key="withdrawals.id", index=True)
    action: str  # APPROVE | CANCEL | REJECT
    actor: str
    actor_roles: list[str] = Field(default_factory=list, sa_type=JSONB)
    via: str  # the credential: "api_key:<prefix>" or "oidc:<issuer>"
    reason: str = ""
    state: str = "ACCEPTED"  # ACCEPTED | REFUSED (the workflow refused it: it counts for nothing)
    created_at: datetime = _ts()


class WithdrawalHold(SQLModel, table=True):
    """A pause placed through the API. While one is active nothing is signed for the withdrawal,
    whatever its workflow was told; an operator's hold is lifted only by an operator."""

    __tablename__ = "withdrawal_holds"

    id: int | None = Field(default=None, primary_key=True)
    withdrawal_id: str = Field(foreign_key="withdrawals.id", index=True)
    placed_by: str
    placed_as: str  # OWNER | OPERATOR
    via: str
    reason: str = ""
    batch: str | None = None  # pause-all: one id for the holds placed together
    placed_at: datetime = _ts()
    lifted_by: str | None = None
    lifted_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
