"""Key pool execution: the activities that carry out what the planners decided (make and activate a
pool key, wait for a pool wallet or movement another run started) and leasing for other workflows.
Composed with the planners into PoolActivities (activities/pools.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from temporalio import activity

from activities.pool_common import FINAL, PoolActivitiesBase
from activities.pool_leases import lease_explorer, lease_withdrawal, return_explorer
from activities.wallets import ActivateWalletInput
from core.errors import PermanentError, WalletNotFound
from models.db import Wallet, Withdrawal
from models.payloads import CreatedKey, ExplorerLease, LeaseRequest, LeaseReturn, WalletCreationResult

WAIT_POLL_SECONDS = 1.0


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


class PoolExecution(PoolActivitiesBase):
    """What the planners' rows and other workflows need done: keys made, waits, leases."""

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
            self._sessions,
            self._chains,
            chain=request.chain,
            lease_id=request.lease_id,
            leaser=request.leased_by,
            idempotency_key=request.idempotency_key,
            destination=request.to,
            asset=request.asset,
            amount=request.amount,
            seal_key=self._settings.intent_seal_key_bytes,
        )
        return withdrawal.id

    @activity.defn(name="pool_return_explorer")
    async def return_lease(self, request: LeaseReturn) -> ExplorerLease:
        return await return_explorer(self._sessions, request)
