"""Key pools (seed 004): HODL (cold) -> Bank -> single-use Explorer keys, per chain.

Pool keys ARE wallets (owner ``pool:<chain>``) and every pool movement IS a withdrawal row owned by
``pool:<chain>``, run as ``withdrawal-<id>``: one exactly-once mechanism for everything. The
rebalance activities here only decide *which* rows must exist and insert them idempotently; the
idempotency key of each row derives from the rebalance run (its workflow id) and the step:

    rebalance:<chain>:<run>:hodl | :bank-<i> | :explorer:<i>     pool wallets
    rebalance:<chain>:<run>:sweep:<explorer wallet id>             recovery (explorer -> its bank)
    rebalance:<chain>:<run>:topup:<bank wallet id>                 HODL -> bank
    rebalance:<chain>:<creating run>:fund:<explorer wallet id>     bank -> new explorer

so a retried activity, a replayed or reset workflow, or a second run finding leftovers of a crashed
one reaches the same rows and the same child workflows. Each planner runs under a per-chain
PostgreSQL advisory lock, so two overlapping runs cannot both decide to move the same money.

Leasing is an atomic claim (``SELECT ... FOR UPDATE SKIP LOCKED``): a key is handed out once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from activities.locks import advisory_lock
from activities.wallets import ActivateWalletInput, WalletActivities
from chains.base import TransferIntent
from chains.registry import ChainRegistry
from core import metrics
from core.errors import (
    IdempotencyConflict,
    InvalidAmount,
    NotAvailable,
    PermanentError,
    TransientError,
    WalletNotFound,
)
from core.money import to_base_units, to_decimal_string
from core.settings import PoolSettings, Settings
from db.engine import SessionFactory
from models.db import Reservation, Wallet, Withdrawal, WithdrawalEvent, utcnow
from models.intent_seal import seal
from models.payloads import (
    CreatedKey,
    ExplorerLease,
    LeaseRequest,
    LeaseReturn,
    PoolPlan,
    PoolStepInput,
    PoolTransfer,
    PoolWalletRef,
    RebalanceResult,
    WalletCreationResult,
    WithdrawalStatus,
)
from models.pools import KeyState, PoolKey, PoolRebalance, PoolTier, pool_owner
from signers.registry import SignerSet

FINAL = {s.value for s in WithdrawalStatus if s.is_final}
WAIT_POLL_SECONDS = 1.0


# --- errors (codes in API answers and Temporal failures) ---------------------------------------
class PoolNotConfigured(NotAvailable):
    code = "POOL_NOT_CONFIGURED"


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


# --- helpers -------------------------------------------------------------------------------------
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


async def _keys(session: AsyncSession, chain: str, tier: str, *states: str) -> list[PoolKey]:
    query = select(PoolKey).where(PoolKey.chain == chain, PoolKey.tier == tier)
    if states:
        query = query.where(col(PoolKey.state).in_(states))
    return list((await session.exec(query.order_by(col(PoolKey.created_at), col(PoolKey.wallet_id)))).all())


async def _held_native(session: AsyncSession, wallet_id: str, native: str) -> int:
    """What in-flight withdrawals hold of a wallet's native asset (amounts and fees)."""
    rows = await session.exec(select(Reservation).where(Reservation.wallet_id == wallet_id, Reservation.state == "HELD"))
    return sum(r.fee_amount + (r.amount if r.asset == native else 0) for r in rows.all())


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


# --- leasing (shared by the API and the lease activities) --------------------------------------
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
        key = (
            await session.exec(select(PoolKey).where(PoolKey.lease_id == request.lease_id).with_for_update())
        ).first()
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
    request_hash = hashlib.sha256(
        f"{destination}|{asset}|{amount}|{memo_type}|{memo_value}".encode()
    ).hexdigest()
    async with sessions() as session, session.begin():
        key = (await session.exec(select(PoolKey).where(PoolKey.lease_id == lease_id).with_for_update())).first()
        if key is None or key.chain != chain or key.leased_by != leaser:
            raise LeaseNotFound("no such lease", lease_id=lease_id)
        existing = (
            await session.exec(
                select(Withdrawal).where(Withdrawal.owner == pool_owner(chain), Withdrawal.idempotency_key == key_text)
            )
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
        session.add(
            WithdrawalEvent(withdrawal_id=withdrawal.id, status="PENDING", detail={"lease_id": lease_id, "leased_by": leaser})
        )
        key.lease_withdrawal_id = withdrawal.id
        key.updated_at = utcnow()
        session.add(key)
    metrics.WITHDRAWALS_REQUESTED.labels(chain=chain, asset=withdrawal.asset).inc()
    return withdrawal, True


# --- the rebalance's activities -----------------------------------------------------------------
@dataclass
class CompleteRebalance:
    result: RebalanceResult


@dataclass
class LeaseSpend:
    """A workflow's one withdrawal with its leased explorer (amount in base units)."""

    chain: str
    lease_id: str
    leased_by: str
    idempotency_key: str
    to: str
    asset: str
    amount: int


class PoolActivities:
    def __init__(self, sessions: SessionFactory, chains: ChainRegistry, signers: SignerSet, settings: Settings) -> None:
        self._sessions = sessions
        self._chains = chains
        self._signers = signers
        self._settings = settings
        self._wallets = WalletActivities(sessions, chains, signers)

    # --- shared pieces ---------------------------------------------------------------------
    def _native(self, chain: str):  # type: ignore[no-untyped-def]
        adapter = self._chains.get(chain)
        return adapter, adapter.asset(adapter.settings.native_symbol)

    async def _new_wallet(
        self, session: AsyncSession, chain: str, tier: str, label: str, idempotency_key: str, backend: str, **key_fields: Any
    ) -> tuple[Wallet, PoolKey]:
        owner = pool_owner(chain)
        wallet = (
            await session.exec(
                select(Wallet).where(Wallet.owner == owner, Wallet.chain == chain, Wallet.idempotency_key == idempotency_key)
            )
        ).first()
        if wallet is not None:
            key = await session.get(PoolKey, wallet.id)
            assert key is not None
            return wallet, key
        wallet = Wallet(
            id=str(uuid.uuid4()), owner=owner, chain=chain, label=label, signer_backend=backend, idempotency_key=idempotency_key
        )
        session.add(wallet)
        await session.flush()
        key = PoolKey(wallet_id=wallet.id, chain=chain, tier=tier, **key_fields)
        session.add(key)
        await session.flush()
        return wallet, key

    async def _transfer(
        self,
        session: AsyncSession,
        *,
        chain: str,
        source: Wallet,
        destination: Wallet,
        amount: int,
        idempotency_key: str,
        run_key: str,
        step: str,
        sweep: bool = False,
    ) -> Withdrawal:
        """Insert (once) the withdrawal row of a pool movement; its workflow is the rebalance's child."""
        owner = pool_owner(chain)
        existing = (
            await session.exec(select(Withdrawal).where(Withdrawal.owner == owner, Withdrawal.idempotency_key == idempotency_key))
        ).first()
        if existing is not None:
            return existing
        _, native = self._native(chain)
        assert destination.address is not None
        withdrawal = Withdrawal(
            id=str(uuid.uuid4()),
            owner=owner,
            wallet_id=source.id,
            chain=chain,
            asset=native.symbol,
            destination=destination.address,
            amount=amount,
            idempotency_key=idempotency_key,
            request_hash=hashlib.sha256(f"{idempotency_key}|{destination.address}|{amount}|{sweep}".encode()).hexdigest(),
            requested_by=f"rebalance:{run_key}",
            sweep=sweep,
        )
        seal(self._settings.intent_seal_key_bytes, withdrawal)
        session.add(withdrawal)
        await session.flush()
        session.add(
            WithdrawalEvent(
                withdrawal_id=withdrawal.id, status="PENDING", detail={"rebalance": run_key, "step": step, "to_wallet": destination.id}
            )
        )
        metrics.WITHDRAWALS_REQUESTED.labels(chain=chain, asset=native.symbol).inc()
        return withdrawal

    def _needs_approval(self, chain: str, asset: str, amount: int, from_hodl: bool) -> bool:
        """The same rule validate_withdrawal applies (WithdrawalPolicy), to know what to wait for."""
        adapter, native = self._native(chain)
        decimals = adapter.asset(asset).decimals
        threshold = self._settings.approval_thresholds.get(f"{chain}:{asset}")
        needs = threshold is not None and amount > units(threshold, decimals)
        if from_hodl:
            needs = needs or amount > units(pool_settings(self._settings, chain).hodl_auto_approve_up_to, native.decimals)
        return needs

    async def _sync_created(self, session: AsyncSession, chain: str) -> None:
        """Pool keys follow their wallet's creation: ACTIVE (HODL, Bank) or FAILED."""
        rows = await session.exec(
            select(PoolKey, Wallet)
            .join(Wallet, col(Wallet.id) == col(PoolKey.wallet_id))
            .where(PoolKey.chain == chain, PoolKey.state == KeyState.CREATING)
        )
        for key, wallet in rows.all():
            if wallet.status == "FAILED":
                key.state = KeyState.FAILED
            elif wallet.status == "ACTIVE" and key.tier != PoolTier.EXPLORER:
                key.state = KeyState.ACTIVE
            else:
                continue
            key.updated_at = utcnow()
            session.add(key)

    async def _creating(self, session: AsyncSession, chain: str) -> list[PoolWalletRef]:
        rows = await session.exec(
            select(Wallet)
            .join(PoolKey, col(Wallet.id) == col(PoolKey.wallet_id))
            .where(PoolKey.chain == chain, Wallet.status == "CREATING")
            .order_by(col(Wallet.created_at))
        )
        return [
            PoolWalletRef(wallet_id=w.id, via_child=w.signer_backend == self._settings.signer_backend) for w in rows.all()
        ]

    async def _active_wallet(self, session: AsyncSession, key: PoolKey) -> Wallet | None:
        wallet = await session.get(Wallet, key.wallet_id)
        return wallet if wallet is not None and wallet.status == "ACTIVE" and wallet.address else None

    # --- step 0: the run, expired leases, HODL and Bank keys -----------------------------------
    @activity.defn(name="pool_begin_rebalance")
    async def begin(self, step: PoolStepInput) -> PoolPlan:
        chain = step.chain.lower()
        pool = pool_settings(self._settings, chain)
        self._chains.get(chain)
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            run = await session.get(PoolRebalance, step.run_key, with_for_update=True)
            if run is None:
                session.add(PoolRebalance(id=step.run_key, chain=chain, run_id=step.run_id))
            elif run.status != "RUNNING":
                run.status, run.finished_at, run.run_id = "RUNNING", None, step.run_id  # a reset run
                session.add(run)
            await expire_leases(session, chain)
            await self._sync_created(session, chain)
            if not await _keys(session, chain, PoolTier.HODL, KeyState.CREATING, KeyState.ACTIVE):
                backend = pool.hodl_signer_backend or self._settings.signer_backend
                await self._new_wallet(session, chain, PoolTier.HODL, "hodl", f"rebalance:{chain}:{step.run_key}:hodl", backend)
            banks = await _keys(session, chain, PoolTier.BANK, KeyState.CREATING, KeyState.ACTIVE)
            labels = {(await session.get(Wallet, b.wallet_id)).label for b in banks}  # type: ignore[union-attr]
            for i in range(1, pool.bank_count + 1):
                if f"bank-{i}" not in labels:
                    await self._new_wallet(
                        session, chain, PoolTier.BANK, f"bank-{i}", f"rebalance:{chain}:{step.run_key}:bank-{i}",
                        self._settings.signer_backend,
                    )
            return PoolPlan(wallets=await self._creating(session, chain))

    # Kept under their own activity names (recorded in rebalance histories); the work is the
    # wallet activities', which make and activate keys in the wallet row's own backend.
    @activity.defn(name="pool_create_key")
    async def create_key(self, wallet_id: str) -> CreatedKey:
        return await self._wallets.create_key(wallet_id)

    @activity.defn(name="pool_activate_key")
    async def activate_key(self, request: ActivateWalletInput) -> WalletCreationResult:
        return await self._wallets.activate(request)

    @activity.defn(name="pool_wait_wallet")
    async def wait_wallet(self, wallet_id: str) -> str:
        """For a pool wallet whose creation workflow another run started: wait until it is made."""
        while True:
            async with self._sessions() as session:
                wallet = await session.get(Wallet, wallet_id)
            if wallet is None:
                raise WalletNotFound("no such wallet", wallet_id=wallet_id)
            if wallet.status != "CREATING":
                return wallet.status
            activity.heartbeat(wallet.status)
            await asyncio.sleep(WAIT_POLL_SECONDS)

    @activity.defn(name="pool_wait_withdrawal")
    async def wait_withdrawal(self, withdrawal_id: str) -> str:
        """For a pool movement whose workflow another run started: wait for its final status."""
        while True:
            async with self._sessions() as session:
                withdrawal = await session.get(Withdrawal, withdrawal_id)
            if withdrawal is None:
                raise PermanentError("no such withdrawal", withdrawal_id=withdrawal_id)
            if withdrawal.status in FINAL:
                return withdrawal.status
            activity.heartbeat(withdrawal.status)
            await asyncio.sleep(WAIT_POLL_SECONDS)

    # --- step 1: recover retired explorers into their bank ----------------------------------
    @activity.defn(name="pool_plan_recovery")
    async def plan_recovery(self, step: PoolStepInput) -> PoolPlan:
        chain = step.chain.lower()
        adapter, native = self._native(chain)
        plan = PoolPlan()
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            await self._settle_recoveries(session, chain)
            banks = await _keys(session, chain, PoolTier.BANK, KeyState.ACTIVE)
            for key in await _keys(session, chain, PoolTier.EXPLORER, KeyState.RETIRED, KeyState.RECOVERING):
                if key.state == KeyState.RECOVERING:
                    plan.transfers.append(PoolTransfer(key.recovery_withdrawal_id or "", native.symbol))
                    continue
                explorer = await session.get(Wallet, key.wallet_id)
                bank_key = next((b for b in banks if b.wallet_id == key.funded_by), banks[0] if banks else None)
                bank = await session.get(Wallet, bank_key.wallet_id) if bank_key else None
                if explorer is None or explorer.address is None or bank is None or bank.address is None:
                    plan.notes.append(f"explorer {key.wallet_id}: no active bank to recover into")
                    continue
                if await self._in_flight(session, explorer.id):
                    plan.notes.append(f"explorer {key.wallet_id}: a withdrawal from it is still in flight")
                    continue
                try:
                    quote = await adapter.sweep_quote(
                        TransferIntent(sender=explorer.address, destination=bank.address, asset=native, amount=0, sweep=True)
                    )
                except PermanentError as e:  # e.g. a Stellar explorer holding a trustline: needs a person
                    plan.notes.append(f"explorer {key.wallet_id} cannot be swept: {e.message}")
                    continue
                if quote.amount <= 0:
                    # Nothing left, or less than the fee of moving it: recovered as it is.
                    self._recovered(session, key, explorer, 0, chain, native)
                    continue
                withdrawal = await self._transfer(
                    session, chain=chain, source=explorer, destination=bank, amount=0, sweep=True,
                    idempotency_key=f"rebalance:{chain}:{step.run_key}:sweep:{explorer.id}", run_key=step.run_key, step="recover",
                )
                if withdrawal.status in FINAL:
                    continue  # this run's sweep already ended (and failed): a later run tries again
                key.state, key.recovery_withdrawal_id, key.updated_at = KeyState.RECOVERING, withdrawal.id, utcnow()
                session.add(key)
                plan.transfers.append(PoolTransfer(withdrawal.id, native.symbol))
        return plan

    async def _in_flight(self, session: AsyncSession, wallet_id: str) -> bool:
        rows = await session.exec(
            select(Withdrawal.id).where(Withdrawal.wallet_id == wallet_id, col(Withdrawal.status).not_in(FINAL)).limit(1)
        )
        return rows.first() is not None

    def _recovered(self, session: AsyncSession, key: PoolKey, explorer: Wallet, amount: int, chain: str, native) -> None:  # type: ignore[no-untyped-def]
        now = utcnow()
        key.state, key.recovered_at, key.recovered_amount, key.updated_at = KeyState.RECOVERED, now, amount, now
        session.add(key)
        explorer.status, explorer.updated_at = "INACTIVE", now  # single use: never spent from again
        session.add(explorer)
        metrics.POOL_EXPLORERS_RECOVERED.labels(chain=chain).inc()
        if amount:
            metrics.POOL_RECOVERED_AMOUNT.labels(chain=chain, asset=native.symbol).inc(amount / 10**native.decimals)

    async def _settle_recoveries(self, session: AsyncSession, chain: str) -> int:
        _, native = self._native(chain)
        recovered = 0
        for key in await _keys(session, chain, PoolTier.EXPLORER, KeyState.RECOVERING):
            withdrawal = await session.get(Withdrawal, key.recovery_withdrawal_id) if key.recovery_withdrawal_id else None
            if withdrawal is not None and withdrawal.status not in FINAL:
                continue
            if withdrawal is not None and withdrawal.status == WithdrawalStatus.COMPLETED.value:
                explorer = await session.get(Wallet, key.wallet_id)
                assert explorer is not None
                self._recovered(session, key, explorer, withdrawal.amount, chain, native)
                recovered += 1
            else:  # the sweep did not happen: the next run tries again
                key.state, key.updated_at = KeyState.RETIRED, utcnow()
                session.add(key)
        return recovered

    @activity.defn(name="pool_finish_recovery")
    async def finish_recovery(self, step: PoolStepInput) -> int:
        chain = step.chain.lower()
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            return await self._settle_recoveries(session, chain)

    # --- step 2: top up underfunded banks from HODL ------------------------------------------
    async def _settle_topups(self, session: AsyncSession, chain: str) -> int:
        funded = 0
        for bank in await _keys(session, chain, PoolTier.BANK):
            if bank.funding_withdrawal_id is None:
                continue
            withdrawal = await session.get(Withdrawal, bank.funding_withdrawal_id)
            if withdrawal is not None and withdrawal.status not in FINAL:
                continue
            if withdrawal is not None and withdrawal.status == WithdrawalStatus.COMPLETED.value:
                funded += 1
                metrics.POOL_BANKS_FUNDED.labels(chain=chain).inc()
            bank.funding_withdrawal_id, bank.updated_at = None, utcnow()  # settled: the next top-up may start
            session.add(bank)
        return funded

    @activity.defn(name="pool_plan_bank_topups")
    async def plan_bank_topups(self, step: PoolStepInput) -> PoolPlan:
        chain = step.chain.lower()
        pool = pool_settings(self._settings, chain)
        adapter, native = self._native(chain)
        target = units(pool.bank_target_balance, native.decimals)
        plan = PoolPlan()
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            await self._sync_created(session, chain)
            await self._settle_topups(session, chain)
            hodl_keys = await _keys(session, chain, PoolTier.HODL, KeyState.ACTIVE)
            hodl = await self._active_wallet(session, hodl_keys[0]) if hodl_keys else None
            if hodl is None:
                plan.notes.append("no active HODL key yet")
                return plan
            assert hodl.address is not None
            hodl_available = await adapter.balance(hodl.address, native) - await _held_native(session, hodl.id, native.symbol)
            for bank_key in await _keys(session, chain, PoolTier.BANK, KeyState.ACTIVE):
                bank = await self._active_wallet(session, bank_key)
                if bank is None or bank.address is None:
                    continue
                if bank_key.funding_withdrawal_id is not None:  # a top-up still on its way (or awaiting approval)
                    pending = await session.get(Withdrawal, bank_key.funding_withdrawal_id)
                    assert pending is not None
                    wait = pending.status != WithdrawalStatus.AWAITING_APPROVAL.value and not self._needs_approval(
                        chain, native.symbol, pending.amount, from_hodl=True
                    )
                    plan.transfers.append(PoolTransfer(pending.id, native.symbol, wait=wait))
                    continue
                balance = await adapter.balance(bank.address, native) - await _held_native(session, bank.id, native.symbol)
                if balance >= target:
                    continue
                amount = target - balance
                fee = await adapter.estimate_max_fee(
                    TransferIntent(sender=hodl.address, destination=bank.address, asset=native, amount=amount)
                )
                if hodl_available < amount + fee:
                    plan.notes.append(
                        f"HODL cannot cover the {bank.label} top-up of {to_decimal_string(amount, native.decimals)} {native.symbol}"
                    )
                    continue
                hodl_available -= amount + fee
                withdrawal = await self._transfer(
                    session, chain=chain, source=hodl, destination=bank, amount=amount,
                    idempotency_key=f"rebalance:{chain}:{step.run_key}:topup:{bank.id}", run_key=step.run_key, step="fund_bank",
                )
                if withdrawal.status in FINAL:
                    plan.notes.append(f"{bank.label}: this run already topped it up once")
                    continue
                bank_key.funding_withdrawal_id, bank_key.updated_at = withdrawal.id, utcnow()
                session.add(bank_key)
                wait = not self._needs_approval(chain, native.symbol, amount, from_hodl=True)
                plan.transfers.append(PoolTransfer(withdrawal.id, native.symbol, wait=wait))
        return plan

    @activity.defn(name="pool_finish_bank_topups")
    async def finish_bank_topups(self, step: PoolStepInput) -> int:
        chain = step.chain.lower()
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            return await self._settle_topups(session, chain)

    # --- step 3: create and fund explorers ---------------------------------------------------
    @activity.defn(name="pool_plan_explorers")
    async def plan_explorers(self, step: PoolStepInput) -> PoolPlan:
        """Explorer wallets to make: enough to bring available + in-progress up to the minimum
        (at least `explorers_to_create` when low), as many as the banks can fund."""
        chain = step.chain.lower()
        pool = pool_settings(self._settings, chain)
        adapter, native = self._native(chain)
        target = units(pool.explorer_target_balance, native.decimals)
        plan = PoolPlan()
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            await self._sync_created(session, chain)
            explorers = await _keys(session, chain, PoolTier.EXPLORER)
            counts = {s: sum(1 for k in explorers if k.state == s) for s in KeyState.EXPLORER_STATES}
            ready_or_coming = counts[KeyState.AVAILABLE] + counts[KeyState.CREATING] + counts[KeyState.FUNDING]
            deficit = pool.min_available_explorers - ready_or_coming
            wanted = max(pool.explorers_to_create, deficit) if deficit > 0 else 0
            if wanted:
                capacity = await self._bank_capacity(session, chain, target, explorers)
                n = 0
                for i in range(wanted):
                    bank_id = max(capacity, key=lambda b: capacity[b], default=None)
                    need = target + await self._funding_fee(session, chain, bank_id, target) if bank_id else 0
                    if bank_id is None or capacity[bank_id] < need:
                        plan.notes.append(f"banks can fund {n} of {wanted} new explorers")
                        break
                    capacity[bank_id] -= need
                    await self._new_wallet(
                        session, chain, PoolTier.EXPLORER, f"explorer-{len(explorers) + i + 1}",
                        f"rebalance:{chain}:{step.run_key}:explorer:{i}", self._settings.signer_backend,
                        funded_by=bank_id, created_by_run=step.run_key,
                    )
                    n += 1
            plan.wallets = [w for w in await self._creating(session, chain)]
        return plan

    async def _funding_fee(self, session: AsyncSession, chain: str, bank_id: str, amount: int) -> int:
        adapter, native = self._native(chain)
        bank = await session.get(Wallet, bank_id)
        hodl_keys = await _keys(session, chain, PoolTier.HODL, KeyState.ACTIVE)
        other = await session.get(Wallet, hodl_keys[0].wallet_id) if hodl_keys else None
        assert bank is not None and bank.address is not None
        # Any existing account stands in for the (not yet made) explorer address.
        destination = other.address if other is not None and other.address else bank.address
        return await adapter.estimate_max_fee(TransferIntent(sender=bank.address, destination=destination, asset=native, amount=amount))

    async def _bank_capacity(self, session: AsyncSession, chain: str, target: int, explorers: list[PoolKey]) -> dict[str, int]:
        """What each active bank can still spend on new explorers (balance - holds - what the
        explorers it already promised to fund will take)."""
        adapter, native = self._native(chain)
        capacity: dict[str, int] = {}
        for bank_key in await _keys(session, chain, PoolTier.BANK, KeyState.ACTIVE):
            bank = await self._active_wallet(session, bank_key)
            if bank is None or bank.address is None:
                continue
            capacity[bank.id] = await adapter.balance(bank.address, native) - await _held_native(session, bank.id, native.symbol)
        for key in explorers:
            if key.state == KeyState.CREATING and key.funded_by in capacity:
                capacity[key.funded_by] -= target + await self._funding_fee(session, chain, key.funded_by, target)
        return capacity

    @activity.defn(name="pool_plan_explorer_funding")
    async def plan_explorer_funding(self, step: PoolStepInput) -> PoolPlan:
        chain = step.chain.lower()
        pool = pool_settings(self._settings, chain)
        _, native = self._native(chain)
        target = units(pool.explorer_target_balance, native.decimals)
        plan = PoolPlan()
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            await self._sync_created(session, chain)
            for key in await _keys(session, chain, PoolTier.EXPLORER, KeyState.CREATING, KeyState.FUNDING):
                explorer = await session.get(Wallet, key.wallet_id)
                if key.state == KeyState.CREATING:
                    if explorer is None or explorer.status != "ACTIVE":
                        continue  # still being made
                    bank = await session.get(Wallet, key.funded_by) if key.funded_by else None
                    if bank is None or bank.status != "ACTIVE":
                        plan.notes.append(f"explorer {key.wallet_id}: its bank is not active")
                        continue
                    withdrawal = await self._transfer(
                        session, chain=chain, source=bank, destination=explorer, amount=target,
                        idempotency_key=f"rebalance:{chain}:{key.created_by_run}:fund:{explorer.id}",
                        run_key=step.run_key, step="fund_explorer",
                    )
                    key.state, key.funding_withdrawal_id, key.updated_at = KeyState.FUNDING, withdrawal.id, utcnow()
                    session.add(key)
                else:
                    withdrawal = await session.get(Withdrawal, key.funding_withdrawal_id)  # type: ignore[arg-type]
                    assert withdrawal is not None
                    if withdrawal.status in FINAL:
                        continue
                wait = not self._needs_approval(chain, native.symbol, withdrawal.amount, from_hodl=False)
                plan.transfers.append(PoolTransfer(withdrawal.id, native.symbol, wait=wait))
        return plan

    @activity.defn(name="pool_finish_explorer_funding")
    async def finish_explorer_funding(self, step: PoolStepInput) -> int:
        """Funded explorers become AVAILABLE; a funding that failed leaves the key FAILED (unused)."""
        chain = step.chain.lower()
        created = 0
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            for key in await _keys(session, chain, PoolTier.EXPLORER, KeyState.FUNDING):
                withdrawal = await session.get(Withdrawal, key.funding_withdrawal_id) if key.funding_withdrawal_id else None
                if withdrawal is not None and withdrawal.status not in FINAL:
                    continue
                now = utcnow()
                if withdrawal is not None and withdrawal.status == WithdrawalStatus.COMPLETED.value:
                    key.state = KeyState.AVAILABLE
                    created += 1
                    metrics.POOL_EXPLORERS_CREATED.labels(chain=chain).inc()
                else:
                    key.state = KeyState.FAILED
                    explorer = await session.get(Wallet, key.wallet_id)
                    if explorer is not None:
                        explorer.status, explorer.updated_at = "INACTIVE", now
                        session.add(explorer)
                key.updated_at = now
                session.add(key)
        return created

    # --- the end: persist the result, refresh gauges -----------------------------------------
    @activity.defn(name="pool_complete_rebalance")
    async def complete(self, request: CompleteRebalance) -> None:
        result = request.result
        chain = result.chain.lower()
        summary: dict[str, Any] = {
            "status": result.status,
            "recovered": result.recovered,
            "banks_funded": result.banks_funded,
            "explorers_created": result.explorers_created,
            "pending_approvals": result.pending_approvals,
            "notes": result.notes,
        }
        try:
            snapshot = await pool_snapshot(self._sessions, self._chains, chain, with_balances=True)
        except Exception as e:  # noqa: BLE001 - a chain read failing must not lose the run's result
            snapshot = None
            summary["notes"] = [*result.notes, f"balances unavailable: {e}"]
        if snapshot is not None:
            summary["sizes"] = snapshot.sizes
            summary["balances"] = snapshot.tier_balances
            record_pool_metrics(chain, snapshot)
        try:
            _, native = self._native(chain)
        except PermanentError:
            native = None
        async with self._sessions() as session, session.begin():
            run = await session.get(PoolRebalance, result.run_key, with_for_update=True)
            recovered_amount = sum(
                k.recovered_amount or 0
                for k in (
                    await session.exec(
                        select(PoolKey)
                        .join(Withdrawal, col(Withdrawal.id) == col(PoolKey.recovery_withdrawal_id))
                        .where(PoolKey.chain == chain, col(Withdrawal.idempotency_key).like(f"rebalance:{chain}:{result.run_key}:%"))
                    )
                ).all()
            )
            if native is not None:
                summary["recovered_amount"] = to_decimal_string(recovered_amount, native.decimals)
            if run is None:
                run = PoolRebalance(id=result.run_key, chain=chain)
            run.status = result.status
            run.result = summary
            run.error = f"{result.error_code}: {result.error_message}" if result.error_code else None
            run.finished_at = utcnow()
            session.add(run)

    # --- leasing, for other workflows ---------------------------------------------------------
    @activity.defn(name="pool_lease_explorer")
    async def lease(self, request: LeaseRequest) -> ExplorerLease:
        """Lease an explorer for one transaction. Pass a lease_id derived from the calling workflow
        (e.g. its id + step) so a retry gets the same key; waits (retries) while none is available."""
        return await lease_explorer(self._sessions, self._settings, request)

    @activity.defn(name="pool_lease_withdrawal")
    async def lease_spend(self, request: LeaseSpend) -> str:
        """Persist the leaser's one withdrawal from its explorer; the caller then runs it as the
        child workflow `withdrawal-<id>` (same exactly-once path as every withdrawal)."""
        withdrawal, _ = await lease_withdrawal(
            self._sessions, self._chains, chain=request.chain, lease_id=request.lease_id, leaser=request.leased_by,
            idempotency_key=request.idempotency_key, destination=request.to, asset=request.asset, amount=request.amount,
            seal_key=self._settings.intent_seal_key_bytes,
        )
        return withdrawal.id

    @activity.defn(name="pool_return_explorer")
    async def return_lease(self, request: LeaseReturn) -> ExplorerLease:
        return await return_explorer(self._sessions, request)


# --- reading a pool (API, CLI, metrics) ---------------------------------------------------------
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

    balances = dict(zip([w.id for _, w in live], await asyncio.gather(*(read(w) for _, w in live))))
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
                "recovered_amount": None
                if key.recovered_amount is None
                else to_decimal_string(key.recovered_amount, native.decimals),
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
