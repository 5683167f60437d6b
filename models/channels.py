"""Stellar channel accounts (NOTES section 4): system-owned accounts used as a transaction's
source while the paying wallet stays the operation's source.

A channel IS a wallet (owner ``channel:<chain>``): its key lives in the signer backend like any
wallet key. This table adds its place in the chain's channel set and its one lease:

    CREATING -> FUNDING -> READY <-> UNDERFUNDED        (CREATING | FUNDING -> FAILED)

A READY channel is leased by at most one withdrawal at a time (``leased_by``), from the moment
it signs until the withdrawal is final, so the sequence numbers of a channel are claimed by one
withdrawal at a time and never collide in stellar-core's queue.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from models.db import _ts


class ChannelState:
    CREATING = "CREATING"
    FUNDING = "FUNDING"
    READY = "READY"
    UNDERFUNDED = "UNDERFUNDED"
    FAILED = "FAILED"


def channel_owner(chain: str) -> str:
    return f"channel:{chain.lower()}"


class ChannelAccount(SQLModel, table=True):
    __tablename__ = "channel_accounts"
    __table_args__ = (
        sa.UniqueConstraint("leased_by", name="uq_channel_accounts_leased_by"),
        sa.Index("ix_channel_accounts_chain_state", "chain", "state"),
    )

    wallet_id: str = Field(primary_key=True, foreign_key="wallets.id")
    chain: str
    # 0 .. channels.count - 1; a FAILED channel's position is taken over by a new one.
    position: int
    state: str = ChannelState.CREATING
    funding_withdrawal_id: str | None = None  # when a custody wallet funded it (not friendbot)
    leased_by: str | None = None  # the withdrawal signing with it now
    leased_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    lease_count: int = 0
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
