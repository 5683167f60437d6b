"""Policy tables: the versioned policy document, each withdrawal's decisions, the rolling-window
ledger velocity limits add up, and the owners' address books.

The policy is stored whole, one row per version (as a TAP policy is published whole): a change is
a new row with its author and time, so "the version a withdrawal was judged by" names exactly the
rules, groups and modes it was judged by.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.columns import BaseUnits
from models.columns import timestamp_field as _ts


class PolicyVersion(SQLModel, table=True):
    __tablename__ = "policy_versions"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    author: str
    summary: str
    document: dict[str, Any] = Field(sa_type=JSONB)  # core.policy.PolicyDocument as JSON
    created_at: datetime = _ts()


class PolicyDecision(SQLModel, table=True):
    """One judgement of a withdrawal: DECIDE (before funds are held; one per withdrawal) or
    RECHECK (right before its first signature)."""

    __tablename__ = "policy_decisions"
    __table_args__ = (sa.Index("uq_policy_decisions_decide", "withdrawal_id", unique=True, postgresql_where=sa.text("stage = 'DECIDE'")),)

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    withdrawal_id: str = Field(foreign_key="withdrawals.id", index=True)
    stage: str  # DECIDE | RECHECK
    policy_version: int
    rule_id: str
    rule_name: str
    outcome: str  # ALLOW | REQUIRE_APPROVAL | BLOCK | LIMIT_EXCEEDED | EXEMPT
    reason: str
    # REQUIRE_APPROVAL: {"count", "role" | "group", "approvers": [group members]}
    quorum: dict[str, Any] | None = Field(default=None, sa_type=JSONB)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    at: datetime = _ts()


class PolicySpend(SQLModel, table=True):
    """What a withdrawal the policy let through counts in rolling windows. Written with its
    DECIDE decision under one lock, so concurrent decisions see each other; RELEASED when the
    withdrawal ends having paid nothing. `id` orders decisions (a re-check sees what its own
    decision saw: the spends before it)."""

    __tablename__ = "policy_spends"
    __table_args__ = (sa.Index("ix_policy_spends_window", "chain", "asset", "at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    withdrawal_id: str = Field(foreign_key="withdrawals.id", unique=True)
    owner: str = Field(index=True)
    wallet_id: str = Field(index=True)
    chain: str
    asset: str
    amount: int = Field(sa_type=BaseUnits)
    approval_required: bool = False
    internal: bool = False  # to a wallet of the same owner: never counted
    state: str = "ACTIVE"  # ACTIVE | RELEASED
    at: datetime = _ts()
    released_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class AddressBookEntry(SQLModel, table=True):
    """A destination an owner trusts. Usable from `usable_from` (its cooling period), or at once
    once a quorum approved it (`approved_at`); a removed entry is kept, never usable again."""

    __tablename__ = "address_book_entries"
    __table_args__ = (sa.Index("uq_address_book_live", "owner", "chain", "address", unique=True, postgresql_where=sa.text("removed_at IS NULL")),)

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    chain: str
    address: str
    label: str = ""
    created_by: str
    created_at: datetime = _ts()
    usable_from: datetime = Field(sa_type=sa.DateTime(timezone=True))
    approved_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    removed_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    removed_by: str | None = None


class AddressBookApproval(SQLModel, table=True):
    __tablename__ = "address_book_approvals"
    __table_args__ = (sa.UniqueConstraint("entry_id", "approver", name="uq_address_book_approvals"),)

    id: int | None = Field(default=None, primary_key=True)
    entry_id: str = Field(foreign_key="address_book_entries.id", index=True)
    approver: str
    approver_roles: list[str] = Field(default_factory=list, sa_type=JSONB)
    via: str
    at: datetime = _ts()
