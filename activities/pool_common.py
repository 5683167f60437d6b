"""What every part of the key pools shares: the pool's settings and amounts, its keys by tier
and state, what in-flight withdrawals hold, and the state the pool activity classes are built
on. See activities/pools.py for how the pools work."""

from __future__ import annotations

import re

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from activities.wallets import WalletActivities
from chains.registry import ChainRegistry
from core.errors import InvalidAmount, NotAvailable, PermanentError
from core.money import to_base_units
from core.settings import PoolSettings, Settings
from db.engine import SessionFactory
from db.reservations import held_funds
from models.payloads import WithdrawalStatus
from models.pools import PoolKey
from signers.registry import SignerSet

FINAL = {s.value for s in WithdrawalStatus if s.is_final}


class PoolNotConfigured(NotAvailable):
    code = "POOL_NOT_CONFIGURED"


_ZERO = re.compile(r"^0+(\.0*)?$")


def units(amount: str, decimals: int) -> int:
    """A settings amount ("0.1", or "0") in base units."""
    if _ZERO.match(amount.strip()):
        return 0
    try:
        return to_base_units(amount.strip(), decimals)
    except InvalidAmount as e:
        raise PermanentError(f"pool setting {amount!r} is not a decimal amount") from e


def pool_settings(settings: Settings, chain: str) -> PoolSettings:
    pool = settings.pools.get(chain.lower()) or settings.pools.get(chain)
    if pool is None:
        raise PoolNotConfigured(f"no key pool is configured for chain {chain!r}", chain=chain)
    return pool


async def pool_keys(session: AsyncSession, chain: str, tier: str, *states: str) -> list[PoolKey]:
    query = select(PoolKey).where(PoolKey.chain == chain, PoolKey.tier == tier)
    if states:
        query = query.where(col(PoolKey.state).in_(states))
    return list((await session.exec(query.order_by(col(PoolKey.created_at), col(PoolKey.wallet_id)))).all())


async def held_native(session: AsyncSession, wallet_id: str, native: str) -> int:
    """What in-flight withdrawals hold of a wallet's native asset (amounts and fees)."""
    return (await held_funds(session, wallet_id)).native(native)


class PoolActivitiesBase:
    """The clients every pool activity uses, injected once (worker.py builds PoolActivities)."""

    def __init__(self, sessions: SessionFactory, chains: ChainRegistry, signers: SignerSet, settings: Settings) -> None:
        self._sessions = sessions
        self._chains = chains
        self._signers = signers
        self._settings = settings
        self._wallets = WalletActivities(sessions, chains, signers)

    def _native(self, chain: str):  # type: ignore[no-untyped-def]
        adapter = self._chains.get(chain)
        return adapter, adapter.asset(adapter.settings.native_symbol)
