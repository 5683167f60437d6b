"""Reading a pool: its keys by tier and state with their balances (API, CLI, metrics)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from activities.pool_leases import expire_leases
from chains.registry import ChainRegistry
from core import metrics
from core.money import to_decimal_string
from db.engine import SessionFactory
from models.db import Wallet
from models.pools import KeyState, PoolKey, PoolTier


@dataclass
class PoolSnapshot:
    chain: str
    asset: str
    decimals: int
    keys: list[dict[str, Any]]
    sizes: dict[str, dict[str, int]]
    tier_balances: dict[str, str]


async def pool_snapshot(sessions: SessionFactory, chains: ChainRegistry, chain: str, *, with_balances: bool) -> PoolSnapshot:
    chain = chain.lower()
    adapter = chains.get(chain)
    native = adapter.asset(adapter.settings.native_symbol)
    async with sessions() as session, session.begin():
        await expire_leases(session, chain)  # what is shown as leased is really still leased
    async with sessions() as session:
        rows = (
            await session.exec(
                select(PoolKey, Wallet)
                .join(Wallet, col(Wallet.id) == col(PoolKey.wallet_id))
                .where(PoolKey.chain == chain)
                .order_by(col(PoolKey.created_at), col(PoolKey.wallet_id))
            )
        ).all()
    live = [(k, w) for k, w in rows if k.state not in (KeyState.RECOVERED, KeyState.FAILED)]

    async def read(wallet: Wallet) -> int | None:
        if not with_balances or wallet.address is None:
            return None
        return await adapter.balance(wallet.address, native)

    balances = dict(zip([w.id for _, w in live], await asyncio.gather(*(read(w) for _, w in live)), strict=True))
    sizes: dict[str, dict[str, int]] = {t.lower(): {} for t in PoolTier.ALL}
    totals: dict[str, int] = {t.lower(): 0 for t in PoolTier.ALL}
    keys: list[dict[str, Any]] = []
    for key, wallet in rows:
        tier = key.tier.lower()
        sizes[tier][key.state.lower()] = sizes[tier].get(key.state.lower(), 0) + 1
        balance = balances.get(wallet.id)
        totals[tier] += balance or 0
        keys.append(
            {
                "wallet_id": wallet.id,
                "tier": tier,
                "label": wallet.label,
                "state": key.state,
                "address": wallet.address,
                "signer_backend": wallet.signer_backend,
                "balance": None if balance is None else to_decimal_string(balance, native.decimals),
                "funded_by": key.funded_by,
                "funding_withdrawal_id": key.funding_withdrawal_id,
                "recovery_withdrawal_id": key.recovery_withdrawal_id,
                "lease_id": key.lease_id,
                "leased_by": key.leased_by,
                "lease_expires_at": key.lease_expires_at.isoformat() if key.lease_expires_at else None,
                "retired_reason": key.retired_reason,
                "recovered_amount": None if key.recovered_amount is None else to_decimal_string(key.recovered_amount, native.decimals),
            }
        )
    return PoolSnapshot(
        chain=chain,
        asset=native.symbol,
        decimals=native.decimals,
        keys=keys,
        sizes=sizes,
        tier_balances={t: to_decimal_string(v, native.decimals) for t, v in totals.items()},
    )


def record_pool_metrics(chain: str, snapshot: PoolSnapshot) -> None:
    for tier, states in snapshot.sizes.items():
        for state in KeyState.EXPLORER_STATES + (KeyState.ACTIVE,):
            metrics.POOL_KEYS.labels(chain=chain, tier=tier, state=state.lower()).set(states.get(state.lower(), 0))
    for tier, total in snapshot.tier_balances.items():
        metrics.POOL_TIER_BALANCE.labels(chain=chain, tier=tier).set(float(total))
    for key in snapshot.keys:
        if key["balance"] is not None:
            metrics.POOL_KEY_BALANCE.labels(chain=chain, tier=key["tier"]).observe(float(key["balance"]))
