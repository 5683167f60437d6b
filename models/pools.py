"""Key pool tables (seed 004): tiered HODL / Bank / Explorer keys per chain, and rebalance runs.

A pool key IS a wallet (owner ``pool:<chain>``): the key, its address and its signer backend live
in ``wallets``; this table adds the tier and, for explorers, the single-use lifecycle:

    CREATING -> FUNDING -> AVAILABLE -> LEASED -> RETIRED -> RECOVERING -> RECOVERED
    CREATING | FUNDING -> FAILED          (HODL and Bank keys: CREATING -> ACTIVE | FAILED)

Explorer keys are single use, so a key has at most one lease: the lease columns live on the key.
Every movement of pool funds is a ``withdrawals`` row owned by ``pool:<chain>`` (exactly once).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.columns import BaseUnits
from models.columns import timestamp_field as _ts


class PoolTier:
    HODL = "HODL"
    BANK = "BANK"
    EXPLORER = "EXPLORER"
    ALL = (HODL, BANK, EXPLORER)


class KeyState:
    CREATING = "CREATING"
    ACTIVE = "ACTIVE"  # HODL and Bank keys once their wallet is active
    FUNDING = "FUNDING"
    AVAILABLE = "AVAILABLE"
    LEASED = "LEASED"
    RETIRED = "RETIRED"
    RECOVERING = "RECOVERING"
    RECOVERED = "RECOVERED"
    FAILED = "FAILED"
    EXPLORER_STATES = (CREATING, FUNDING, AVAILABLE, LEASED, RETIRED, RECOVERING, RECOVERED, FAILED)


def pool_owner(chain: str) -> str:
    return f"pool:{chain.lower()}"


class PoolKey(SQLModel, table=True):
    __tablename__ = "pool_keys"
    __table_args__ = (
        sa.Index("ix_pool_keys_chain_tier_state", "chain", "tier", "state"),
        sa.UniqueConstraint("lease_id", name="uq_pool_keys_lease_id"),
    )

    wallet_id: str = Field(primary_key=True, foreign_key="wallets.id")
    chain: str
    tier: str  # HODL | BANK | EXPLORER
    state: str = KeyState.CREATING
    # Explorers: the bank key that funds it and receives what is recovered from it.
    funded_by: str | None = Field(default=None)
    created_by_run: str | None = None  # the rebalance run (workflow id) that created the key
    funding_withdrawal_id: str | None = None
    recovery_withdrawal_id: str | None = None
    # The one lease of a single-use explorer.
    lease_id: str | None = None
    leased_by: str | None = None
    leased_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    lease_expires_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    lease_withdrawal_id: str | None = None  # the one withdrawal the leaser made with it
    retired_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    retired_reason: str | None = None  # RETURNED | LEASE_EXPIRED
    recovered_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    recovered_amount: int | None = Field(default=None, sa_type=BaseUnits)  # native base units
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class PoolRebalance(SQLModel, table=True):
    """One row per rebalance run (keyed by its workflow id); `result` is what `pools show` prints."""

    __tablename__ = "pool_rebalances"
    __table_args__ = (sa.Index("ix_pool_rebalances_chain_started", "chain", "started_at"),)

    id: str = Field(primary_key=True)  # workflow id of the run
    chain: str
    run_id: str | None = None
    status: str = "RUNNING"  # RUNNING | COMPLETED | FAILED
    result: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    error: str | None = None
    started_at: datetime = _ts()
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
