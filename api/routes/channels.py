"""Stellar channel accounts, for operators: the chain's channel set and who holds which lease,
and a way to run ChannelAccountsWorkflow now (after changing `channels.count`, or to top up)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, status
from pydantic import BaseModel, Field
from sqlmodel import col, select

from api.deps import OwnerDep, SessionDep, StateDep
from api.scheduling import RunStarted, run_now
from core.errors import NotAvailable
from models.channels import ChannelAccount
from models.db import Wallet
from workflows.channels import ChannelAccountsWorkflow

router = APIRouter(prefix="/v1/channels", tags=["channels"])


class ChannelPublic(BaseModel):
    position: int
    wallet_id: str
    address: str | None
    state: str
    leased_by: str | None = Field(description="the withdrawal signing with this channel now")
    leased_at: datetime | None
    lease_count: int
    signer_backend: str


class ChannelSetPublic(BaseModel):
    chain: str
    configured: int
    sizes: dict[str, int] = Field(description="state -> number of channels")
    channels: list[ChannelPublic]


def _channels_of(state: StateDep, caller: str, chain: str) -> int:
    channels = getattr(state.settings.chain(chain), "channels", None)
    if channels is None:
        raise NotAvailable("this chain has no channel accounts (Stellar only)", chain=chain)
    return channels.count


@router.get("/{chain}", response_model=ChannelSetPublic)
async def show_channels(chain: str, caller: OwnerDep, state: StateDep, session: SessionDep) -> ChannelSetPublic:
    chain = chain.lower()
    configured = _channels_of(state, caller, chain)
    rows = await session.exec(
        select(ChannelAccount, Wallet)
        .join(Wallet, col(Wallet.id) == col(ChannelAccount.wallet_id))
        .where(ChannelAccount.chain == chain)
        .order_by(col(ChannelAccount.position), col(ChannelAccount.created_at))
    )
    channels = [
        ChannelPublic(
            position=row.position,
            wallet_id=row.wallet_id,
            address=wallet.address,
            state=row.state,
            leased_by=row.leased_by,
            leased_at=row.leased_at,
            lease_count=row.lease_count,
            signer_backend=wallet.signer_backend,
        )
        for row, wallet in rows.all()
    ]
    sizes: dict[str, int] = {}
    for channel in channels:
        sizes[channel.state] = sizes.get(channel.state, 0) + 1
    return ChannelSetPublic(chain=chain, configured=configured, sizes=sizes, channels=channels)


@router.post("/{chain}/sync", response_model=RunStarted, status_code=status.HTTP_202_ACCEPTED)
async def sync_channels(chain: str, caller: OwnerDep, state: StateDep) -> RunStarted:
    """Create, fund and top up the channel set now (the schedule `channels-<chain>` does it
    every `channels.check_interval_seconds`)."""
    chain = chain.lower()
    if _channels_of(state, caller, chain) <= 0:
        raise NotAvailable("channels.count is 0 for this chain", chain=chain)
    return await run_now(
        state.temporal,
        state.settings.task_queue,
        chain,
        f"channels-{chain}",
        ChannelAccountsWorkflow.run,
        chain,
        f"Channel accounts of {chain}, run by {caller}",
    )
