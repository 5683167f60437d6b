"""Leasing explorer keys: one atomic claim per lease (``SELECT ... FOR UPDATE SKIP LOCKED``), a key
handed out once, retired when returned or when its lease expires, and the leaser's one withdrawal
from it. Shared by the API (api/routes/pools.py) and the lease activities (pool_execution.py)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from activities.locks import advisory_lock
from activities.pool_common import pool_settings
from chains.registry import ChainRegistry
from core import metrics
from core.errors import IdempotencyConflict, PermanentError, TransientError
from core.settings import Settings
from db.engine import SessionFactory
from models.db import Wallet, Withdrawal, WithdrawalEvent, utcnow
from models.intent_seal import seal
from models.payloads import ExplorerLease, LeaseRequest, LeaseReturn
from models.pools import KeyState, PoolKey, PoolTier, pool_owner


class NoExplorerAvailable(TransientError):
    """Every explorer key is leased or retired; the rebalance creates more. Retried by workflows."""

    code = "NO_EXPLORER_AVAILABLE"
    http_status = 409


class LeaseNotFound(PermanentError):
    code = "LEASE_NOT_FOUND"
    http_status = 404


class LeaseNotActive(PermanentError):
    """Returned, expired or reclaimed: the key can no longer be used."""

    code = "LEASE_NOT_ACTIVE"
    http_status = 409


class LeaseAlreadyUsed(PermanentError):
    """Explorer keys are single use: one withdrawal per lease."""

    code = "LEASE_ALREADY_USED"
    http_status = 409


def _lease_of(key: PoolKey) -> ExplorerLease:
    assert key.lease_id is not None and key.leased_by is not None and key.lease_expires_at is not None
    return ExplorerLease(
        lease_id=key.lease_id,
        chain=key.chain,
        wallet_id=key.wallet_id,
        state=key.state,
        leased_by=key.leased_by,
        expires_at=key.lease_expires_at.isoformat(),
    )


async def expire_leases(session: AsyncSession, chain: str) -> int:
    """Reclaim leases not returned in time: the key is retired (and recovered by the next rebalance)."""
    now = utcnow()
    expired = await session.exec(
        sa.update(PoolKey)
        .where(
            col(PoolKey.chain) == chain,
            col(PoolKey.state) == KeyState.LEASED,
            col(PoolKey.lease_expires_at) < now,
        )
        .values(state=KeyState.RETIRED, retired_at=now, retired_reason="LEASE_EXPIRED", updated_at=now)
        .returning(col(PoolKey.wallet_id))
    )
    count = len(expired.all())
    if count:
        metrics.POOL_EXPLORERS_RETIRED.labels(chain=chain, reason="lease_expired").inc(count)
    return count


async def lease_explorer(sessions: SessionFactory, settings: Settings, request: LeaseRequest) -> ExplorerLease:
    """Claim one AVAILABLE explorer atomically; the same lease id returns the same key."""
    chain = request.chain.lower()
    pool = pool_settings(settings, chain)
    lease_id = request.lease_id or str(uuid.uuid4())
    async with sessions() as session, session.begin():
        await expire_leases(session, chain)
    try:
        async with sessions() as session, session.begin():
            # The same lease id asked twice at once (a retry racing its original): one at a time,
            # so the second finds the first's claim instead of claiming a second key.
            await advisory_lock(session, "lease", lease_id)
            existing = (await session.exec(select(PoolKey).where(PoolKey.lease_id == lease_id))).first()
            if existing is not None:
                if existing.leased_by != request.leased_by or existing.chain != chain:
                    raise LeaseNotFound("no such lease", lease_id=lease_id)
                return _lease_of(existing)
            # SKIP LOCKED: concurrent leasers each take a different row instead of queueing on
            # (and then double-claiming) the same one.
            claimed = await session.exec(
                select(PoolKey)
                .where(PoolKey.chain == chain, PoolKey.tier == PoolTier.EXPLORER, PoolKey.state == KeyState.AVAILABLE)
                .order_by(col(PoolKey.created_at), col(PoolKey.wallet_id))
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            key = claimed.first()
            if key is None:
                raise NoExplorerAvailable(f"no explorer key is available on {chain}", chain=chain)
            now = utcnow()
            key.state = KeyState.LEASED
            key.lease_id = lease_id
            key.leased_by = request.leased_by
            key.leased_at = now
            key.lease_expires_at = now + timedelta(seconds=pool.lease_seconds)
            key.updated_at = now
            session.add(key)
            lease = _lease_of(key)
    except IntegrityError:
        # The same lease id claimed concurrently by a retry: the first claim stands.
        async with sessions() as session:
            existing = (await session.exec(select(PoolKey).where(PoolKey.lease_id == lease_id))).first()
        if existing is None or existing.leased_by != request.leased_by:
            raise
        return _lease_of(existing)
    metrics.POOL_EXPLORERS_ACQUIRED.labels(chain=chain).inc()
    return lease


async def return_explorer(sessions: SessionFactory, request: LeaseReturn, *, operator: bool = False) -> ExplorerLease:
    """Retire a leased key (single use); returning again answers the current state."""
    chain = request.chain.lower()
    async with sessions() as session, session.begin():
        key = (await session.exec(select(PoolKey).where(PoolKey.lease_id == request.lease_id).with_for_update())).first()
        if key is None or key.chain != chain or (key.leased_by != request.by and not operator):
            raise LeaseNotFound("no such lease", lease_id=request.lease_id)
        if key.state == KeyState.LEASED:
            now = utcnow()
            key.state, key.retired_at, key.retired_reason, key.updated_at = KeyState.RETIRED, now, "RETURNED", now
            session.add(key)
            metrics.POOL_EXPLORERS_RETIRED.labels(chain=chain, reason="returned").inc()
        return _lease_of(key)


async def lease_withdrawal(
    sessions: SessionFactory,
    chains: ChainRegistry,
    *,
    chain: str,
    lease_id: str,
    leaser: str,
    idempotency_key: str,
    destination: str,
    asset: str,
    amount: int,
    memo_type: str | None = None,
    memo_value: str | None = None,
    seal_key: bytes,
) -> tuple[Withdrawal, bool]:
    """The leaser's one withdrawal from the leased explorer: (row, created now?).

    Authorization: only the holder of an active lease spends, once. The row is owned by
    ``pool:<chain>`` (the explorer's owner, so the ordinary workflow validates it) and names the
    leaser in ``requested_by`` (four eyes: the leaser cannot approve it). The same
    Idempotency-Key returns the same withdrawal.
    """
    chain = chain.lower()
    key_text = f"lease:{lease_id}:{idempotency_key}"
    request_hash = hashlib.sha256(f"{destination}|{asset}|{amount}|{memo_type}|{memo_value}".encode()).hexdigest()
    async with sessions() as session, session.begin():
        key = (await session.exec(select(PoolKey).where(PoolKey.lease_id == lease_id).with_for_update())).first()
        if key is None or key.chain != chain or key.leased_by != leaser:
            raise LeaseNotFound("no such lease", lease_id=lease_id)
        existing = (
            await session.exec(select(Withdrawal).where(Withdrawal.owner == pool_owner(chain), Withdrawal.idempotency_key == key_text))
        ).first()
        if existing is not None:
            if existing.request_hash != request_hash:
                raise IdempotencyConflict("this Idempotency-Key was used with a different request", withdrawal_id=existing.id)
            return existing, False
        if key.state != KeyState.LEASED or (key.lease_expires_at is not None and key.lease_expires_at < utcnow()):
            raise LeaseNotActive(f"the lease is {key.state.lower()}", lease_id=lease_id, state=key.state)
        if key.lease_withdrawal_id is not None:
            raise LeaseAlreadyUsed("explorer keys are single use: this lease already made its withdrawal", lease_id=lease_id)
        wallet = await session.get(Wallet, key.wallet_id)
        assert wallet is not None and wallet.address is not None
        adapter = chains.get(chain)
        destination = adapter.normalize_address(destination)
        withdrawal = Withdrawal(
            id=str(uuid.uuid4()),
            owner=pool_owner(chain),
            wallet_id=wallet.id,
            chain=chain,
            asset=adapter.asset(asset).symbol,
            destination=destination,
            amount=amount,
            memo_type=memo_type,
            memo_value=memo_value,
            idempotency_key=key_text,
            request_hash=request_hash,
            requested_by=leaser,
        )
        seal(seal_key, withdrawal)
        session.add(withdrawal)
        session.add(WithdrawalEvent(withdrawal_id=withdrawal.id, status="PENDING", detail={"lease_id": lease_id, "leased_by": leaser}))
        key.lease_withdrawal_id = withdrawal.id
        key.updated_at = utcnow()
        session.add(key)
    metrics.WITHDRAWALS_REQUESTED.labels(chain=chain, asset=withdrawal.asset).inc()
    return withdrawal, True
