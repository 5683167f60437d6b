"""Key pool planning: the rebalance's steps, each deciding under a per-chain advisory lock which
wallet and withdrawal rows must exist and inserting them idempotently (their workflows then do the
moving), and settling what earlier steps started. Composed with the executors into PoolActivities
(activities/pools.py), whose docstring names the idempotency keys."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from activities.locks import advisory_lock
from activities.pool_common import FINAL, PoolActivitiesBase, held_native, pool_keys, pool_settings, units
from activities.pool_leases import expire_leases
from activities.pool_snapshot import pool_snapshot, record_pool_metrics
from chains.base import TransferIntent
from core import metrics
from core.errors import PermanentError
from core.money import to_decimal_string
from db import audit
from models.db import Wallet, Withdrawal, WithdrawalEvent, utcnow
from models.intent_seal import seal
from models.payloads import PoolPlan, PoolStepInput, PoolTransfer, PoolWalletRef, RebalanceResult, WithdrawalStatus
from models.pools import KeyState, PoolKey, PoolRebalance, PoolTier, pool_owner


@dataclass
class CompleteRebalance:
    result: RebalanceResult


class PoolPlanning(PoolActivitiesBase):
    """The rebalance's deciding steps: begin (keys to make), recovery, bank top-ups, explorers and
    their funding, and completion; and the row inserts they share."""

    async def _new_wallet(
        self, session: AsyncSession, chain: str, tier: str, label: str, idempotency_key: str, backend: str, **key_fields: Any
    ) -> tuple[Wallet, PoolKey]:
        owner = pool_owner(chain)
        wallet = (
            await session.exec(select(Wallet).where(Wallet.owner == owner, Wallet.chain == chain, Wallet.idempotency_key == idempotency_key))
        ).first()
        if wallet is not None:
            key = await session.get(PoolKey, wallet.id)
            assert key is not None
            return wallet, key
        wallet = Wallet(id=str(uuid.uuid4()), owner=owner, chain=chain, label=label, signer_backend=backend, idempotency_key=idempotency_key)
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
        existing = (await session.exec(select(Withdrawal).where(Withdrawal.owner == owner, Withdrawal.idempotency_key == idempotency_key))).first()
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
            WithdrawalEvent(withdrawal_id=withdrawal.id, status="PENDING", detail={"rebalance": run_key, "step": step, "to_wallet": destination.id})
        )
        await audit.append(
            session,
            actor=f"rebalance:{run_key}",
            action="pool.move_requested",
            object_type="withdrawal",
            object_id=withdrawal.id,
            details={"chain": chain, "step": step, "from_wallet": source.id, "to_wallet": destination.id, "amount": str(amount), "sweep": sweep},
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
        return [PoolWalletRef(wallet_id=w.id, via_child=w.signer_backend == self._settings.signer_backend) for w in rows.all()]

    async def _active_wallet(self, session: AsyncSession, key: PoolKey) -> Wallet | None:
        wallet = await session.get(Wallet, key.wallet_id)
        return wallet if wallet is not None and wallet.status == "ACTIVE" and wallet.address else None

    @asynccontextmanager
    async def _locked(self, chain: str) -> AsyncIterator[AsyncSession]:
        """One transaction holding the chain's pool lock: each planning step reads and changes the
        pool alone, so two runs (or a retried step) never plan the same transfer twice."""
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "pool", chain)
            yield session

    # --- step 0: the run, expired leases, HODL and Bank keys -----------------------------------
    @activity.defn(name="pool_begin_rebalance")
    async def begin(self, step: PoolStepInput) -> PoolPlan:
        chain = step.chain.lower()
        pool = pool_settings(self._settings, chain)
        self._chains.get(chain)
        async with self._locked(chain) as session:
            run = await session.get(PoolRebalance, step.run_key, with_for_update=True)
            if run is None:
                session.add(PoolRebalance(id=step.run_key, chain=chain, run_id=step.run_id))
            elif run.status != "RUNNING":
                run.status, run.finished_at, run.run_id = "RUNNING", None, step.run_id  # a reset run
                session.add(run)
            await expire_leases(session, chain)
            await self._sync_created(session, chain)
            if not await pool_keys(session, chain, PoolTier.HODL, KeyState.CREATING, KeyState.ACTIVE):
                backend = pool.hodl_signer_backend or self._settings.signer_backend
                await self._new_wallet(session, chain, PoolTier.HODL, "hodl", f"rebalance:{chain}:{step.run_key}:hodl", backend)
            banks = await pool_keys(session, chain, PoolTier.BANK, KeyState.CREATING, KeyState.ACTIVE)
            labels = {(await session.get(Wallet, b.wallet_id)).label for b in banks}  # type: ignore[union-attr]
            for i in range(1, pool.bank_count + 1):
                if f"bank-{i}" not in labels:
                    await self._new_wallet(
                        session,
                        chain,
                        PoolTier.BANK,
                        f"bank-{i}",
                        f"rebalance:{chain}:{step.run_key}:bank-{i}",
                        self._settings.signer_backend,
                    )
            return PoolPlan(wallets=await self._creating(session, chain))

    # --- step 1: recover retired explorers into their bank ----------------------------------
    @activity.defn(name="pool_plan_recovery")
    async def plan_recovery(self, step: PoolStepInput) -> PoolPlan:
        chain = step.chain.lower()
        adapter, native = self._native(chain)
        plan = PoolPlan()
        async with self._locked(chain) as session:
            await self._settle_recoveries(session, chain)
            banks = await pool_keys(session, chain, PoolTier.BANK, KeyState.ACTIVE)
            for key in await pool_keys(session, chain, PoolTier.EXPLORER, KeyState.RETIRED, KeyState.RECOVERING):
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
                    session,
                    chain=chain,
                    source=explorer,
                    destination=bank,
                    amount=0,
                    sweep=True,
                    idempotency_key=f"rebalance:{chain}:{step.run_key}:sweep:{explorer.id}",
                    run_key=step.run_key,
                    step="recover",
                )
                if withdrawal.status in FINAL:
                    continue  # this run's sweep already ended (and failed): a later run tries again
                key.state, key.recovery_withdrawal_id, key.updated_at = KeyState.RECOVERING, withdrawal.id, utcnow()
                session.add(key)
                plan.transfers.append(PoolTransfer(withdrawal.id, native.symbol))
        return plan

    async def _in_flight(self, session: AsyncSession, wallet_id: str) -> bool:
        rows = await session.exec(select(Withdrawal.id).where(Withdrawal.wallet_id == wallet_id, col(Withdrawal.status).not_in(FINAL)).limit(1))
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
        for key in await pool_keys(session, chain, PoolTier.EXPLORER, KeyState.RECOVERING):
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
        async with self._locked(chain) as session:
            return await self._settle_recoveries(session, chain)

    # --- step 2: top up underfunded banks from HODL ------------------------------------------
    async def _settle_topups(self, session: AsyncSession, chain: str) -> int:
        funded = 0
        for bank in await pool_keys(session, chain, PoolTier.BANK):
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
        async with self._locked(chain) as session:
            await self._sync_created(session, chain)
            await self._settle_topups(session, chain)
            hodl_keys = await pool_keys(session, chain, PoolTier.HODL, KeyState.ACTIVE)
            hodl = await self._active_wallet(session, hodl_keys[0]) if hodl_keys else None
            if hodl is None:
                plan.notes.append("no active HODL key yet")
                return plan
            assert hodl.address is not None
            hodl_available = await adapter.balance(hodl.address, native) - await held_native(session, hodl.id, native.symbol)
            for bank_key in await pool_keys(session, chain, PoolTier.BANK, KeyState.ACTIVE):
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
                balance = await adapter.balance(bank.address, native) - await held_native(session, bank.id, native.symbol)
                if balance >= target:
                    continue
                amount = target - balance
                fee = await adapter.estimate_max_fee(TransferIntent(sender=hodl.address, destination=bank.address, asset=native, amount=amount))
                if hodl_available < amount + fee:
                    plan.notes.append(f"HODL cannot cover the {bank.label} top-up of {to_decimal_string(amount, native.decimals)} {native.symbol}")
                    continue
                hodl_available -= amount + fee
                withdrawal = await self._transfer(
                    session,
                    chain=chain,
                    source=hodl,
                    destination=bank,
                    amount=amount,
                    idempotency_key=f"rebalance:{chain}:{step.run_key}:topup:{bank.id}",
                    run_key=step.run_key,
                    step="fund_bank",
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
        async with self._locked(chain) as session:
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
        async with self._locked(chain) as session:
            await self._sync_created(session, chain)
            explorers = await pool_keys(session, chain, PoolTier.EXPLORER)
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
                        session,
                        chain,
                        PoolTier.EXPLORER,
                        f"explorer-{len(explorers) + i + 1}",
                        f"rebalance:{chain}:{step.run_key}:explorer:{i}",
                        self._settings.signer_backend,
                        funded_by=bank_id,
                        created_by_run=step.run_key,
                    )
                    n += 1
            plan.wallets = [w for w in await self._creating(session, chain)]
        return plan

    async def _funding_fee(self, session: AsyncSession, chain: str, bank_id: str, amount: int) -> int:
        adapter, native = self._native(chain)
        bank = await session.get(Wallet, bank_id)
        hodl_keys = await pool_keys(session, chain, PoolTier.HODL, KeyState.ACTIVE)
        other = await session.get(Wallet, hodl_keys[0].wallet_id) if hodl_keys else None
        assert bank is not None and bank.address is not None
        # Any existing account stands in for the (not yet made) explorer address.
        destination = other.address if other is not None and other.address else bank.address
        fee: int = await adapter.estimate_max_fee(TransferIntent(sender=bank.address, destination=destination, asset=native, amount=amount))
        return fee

    async def _bank_capacity(self, session: AsyncSession, chain: str, target: int, explorers: list[PoolKey]) -> dict[str, int]:
        """What each active bank can still spend on new explorers (balance - holds - what the
        explorers it already promised to fund will take)."""
        adapter, native = self._native(chain)
        capacity: dict[str, int] = {}
        for bank_key in await pool_keys(session, chain, PoolTier.BANK, KeyState.ACTIVE):
            bank = await self._active_wallet(session, bank_key)
            if bank is None or bank.address is None:
                continue
            capacity[bank.id] = await adapter.balance(bank.address, native) - await held_native(session, bank.id, native.symbol)
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
        async with self._locked(chain) as session:
            await self._sync_created(session, chain)
            for key in await pool_keys(session, chain, PoolTier.EXPLORER, KeyState.CREATING, KeyState.FUNDING):
                explorer = await session.get(Wallet, key.wallet_id)
                if key.state == KeyState.CREATING:
                    if explorer is None or explorer.status != "ACTIVE":
                        continue  # still being made
                    bank = await session.get(Wallet, key.funded_by) if key.funded_by else None
                    if bank is None or bank.status != "ACTIVE":
                        plan.notes.append(f"explorer {key.wallet_id}: its bank is not active")
                        continue
                    withdrawal = await self._transfer(
                        session,
                        chain=chain,
                        source=bank,
                        destination=explorer,
                        amount=target,
                        idempotency_key=f"rebalance:{chain}:{key.created_by_run}:fund:{explorer.id}",
                        run_key=step.run_key,
                        step="fund_explorer",
                    )
                    key.state, key.funding_withdrawal_id, key.updated_at = KeyState.FUNDING, withdrawal.id, utcnow()
                    session.add(key)
                else:
                    funding = await session.get(Withdrawal, key.funding_withdrawal_id)
                    assert funding is not None
                    withdrawal = funding
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
        async with self._locked(chain) as session:
            for key in await pool_keys(session, chain, PoolTier.EXPLORER, KeyState.FUNDING):
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
