"""Stellar channel accounts (NOTES section 4): many payments in flight from one wallet.

stellar-core admits one transaction per source account at a time (TRY_AGAIN_LATER otherwise),
so a wallet that is its own transaction source lands one payment per ledger. A channel account is
a system account that is the *transaction's* source (its sequence number, its fee) while the
wallet stays the *payment's* source; both sign. With N channels, N payments from one wallet land
in the same ledger.

Channels are wallets (owner ``channel:<chain>``; keys in the signer backend like any other) with
a ``channel_accounts`` row. Exactly-once is the withdrawal's own mechanism, unchanged: the lease
only decides whose sequence numbers a withdrawal claims. A withdrawal leases a READY channel
(``FOR UPDATE SKIP LOCKED``) when it signs and keeps it until it is final; the sequence claim and
signed attempt are then written for the channel, under the channel's sender lock. With every
READY channel leased, the signing step waits (CHANNELS_BUSY, retried shortly) for one to be handed
back: the wallet as its own source would land one payment per ledger and get TRY_AGAIN_LATER for
the rest. The wallet is its own source only where no channel is configured or none is READY (not
created yet, all underfunded or vanished), so that a channel set that cannot be funded never stalls
withdrawals.

ChannelAccountsWorkflow (``channels-<chain>``, at worker start and on its schedule) keeps the set:
it creates missing channels (child WalletCreationWorkflow), funds new ones (friendbot on test
networks, else a withdrawal from ``channels.funding_wallet_id``, child WithdrawalWorkflow), and
tops up channels set aside as UNDERFUNDED.
"""

from __future__ import annotations

import hashlib
import logging
import random
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from activities.locks import advisory_lock
from activities.pools import units
from chains.registry import ChainRegistry
from core import metrics
from core.errors import AlreadyFunded, ChannelsBusy, NotAvailable, PermanentError, SubmissionFailed, WalletNotFound
from core.settings import ChannelSettings, Settings
from db import audit
from db.engine import SessionFactory
from models.channels import ChannelAccount, ChannelState, channel_owner
from models.db import Wallet, Withdrawal, WithdrawalEvent, utcnow
from models.intent_seal import seal
from models.payloads import ChannelPlan, ChannelSetResult, WithdrawalStatus

log = logging.getLogger(__name__)

# Channels found underfunded while leasing, per try, before the signing step looks again.
LEASE_TRIES = 3
# How soon a withdrawal waiting for a channel looks again: a channel is handed back when its
# withdrawal is final (about a ledger after it signed). Jittered, so waiters do not move in step;
# growing with the attempt, so a long queue costs few tries (activity retries add no history events).
BUSY_RETRY_FIRST_SECONDS = 0.25
BUSY_RETRY_MAX_SECONDS = 2.0


def _busy_delay() -> timedelta:
    attempt = activity.info().attempt if activity.in_activity() else 1
    ceiling = min(BUSY_RETRY_MAX_SECONDS, BUSY_RETRY_FIRST_SECONDS * attempt)
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - jitter, not a secret


def channel_settings(chains: ChainRegistry, chain_name: str) -> ChannelSettings | None:
    """The chain's channel set, or None where channels do not apply (count 0, or not Stellar)."""
    chain = chains.get(chain_name)
    channels: ChannelSettings | None = getattr(chain.settings, "channels", None)  # only Stellar's settings have channels
    if not chain.supports_channels or channels is None or channels.count <= 0:
        return None
    return channels


class ChannelLeases:
    """The withdrawal activities' side: lease a channel for signing, release it when final."""

    def __init__(self, sessions: SessionFactory, chains: ChainRegistry) -> None:
        self._sessions = sessions
        self._chains = chains

    async def lease(self, withdrawal: Withdrawal) -> Wallet | None:
        """The withdrawal's channel: the one it holds already, else a free READY one with enough
        XLM for fees. None (the wallet is its own transaction source) only where channels do not
        apply or none is usable (none READY: not created yet, all underfunded or vanished); with
        READY channels all leased, ChannelsBusy: the signing step waits for one to be handed back,
        since the network admits one transaction per source account per ledger."""
        channels = channel_settings(self._chains, withdrawal.chain)
        if channels is None or withdrawal.sweep:
            return None  # a merge's amount is net of the fee the wallet pays itself
        held = await self.held(withdrawal.id)
        if held is not None:
            return held
        chain = self._chains.get(withdrawal.chain)
        native = chain.asset(chain.settings.native_symbol)
        minimum = units(channels.min_balance, native.decimals)
        for _ in range(LEASE_TRIES):
            async with self._sessions() as session, session.begin():
                row = (
                    await session.exec(
                        select(ChannelAccount)
                        .where(
                            ChannelAccount.chain == withdrawal.chain,
                            ChannelAccount.state == ChannelState.READY,
                            col(ChannelAccount.leased_by).is_(None),
                        )
                        # Least recently used first: spreads fees and keeps hot channels cool.
                        .order_by(col(ChannelAccount.leased_at).asc().nulls_first(), col(ChannelAccount.position))
                        .limit(1)
                        .with_for_update(skip_locked=True)
                    )
                ).first()
                if row is None:
                    if not await self._any_ready(session, withdrawal.chain):
                        metrics.CHANNEL_LEASES.labels(chain=withdrawal.chain, result="none_ready").inc()
                        return None
                    metrics.CHANNEL_LEASES.labels(chain=withdrawal.chain, result="none_free").inc()
                    raise ChannelsBusy("every channel account is leased: waiting for one", chain=withdrawal.chain, retry_after=_busy_delay())
                row.leased_by, row.leased_at = withdrawal.id, utcnow()
                row.lease_count += 1
                row.updated_at = utcnow()
                session.add(row)
                wallet = await session.get(Wallet, row.wallet_id)
            assert wallet is not None and wallet.address is not None
            if await chain.balance(wallet.address, native) >= minimum:
                metrics.CHANNEL_LEASES.labels(chain=withdrawal.chain, result="leased").inc()
                return wallet
            # Set it aside for the next ChannelAccountsWorkflow run to top up; try another.
            async with self._sessions() as session, session.begin():
                await session.exec(
                    sa.update(ChannelAccount)
                    .where(col(ChannelAccount.wallet_id) == wallet.id, col(ChannelAccount.leased_by) == withdrawal.id)
                    .values(state=ChannelState.UNDERFUNDED, leased_by=None, updated_at=utcnow())
                )
            metrics.CHANNEL_LEASES.labels(chain=withdrawal.chain, result="underfunded").inc()
            log.warning("channel account underfunded: set aside", extra={"channel": wallet.address})
        # Several set aside in a row: look again shortly (the next try finds a good one or none READY).
        raise ChannelsBusy("channel accounts found underfunded: looking again", chain=withdrawal.chain, retry_after=_busy_delay())

    @staticmethod
    async def _any_ready(session: AsyncSession, chain: str) -> bool:
        """Whether the chain has a READY channel at all (leased, or being leased right now)."""
        found = await session.exec(
            select(ChannelAccount.wallet_id).where(ChannelAccount.chain == chain, ChannelAccount.state == ChannelState.READY).limit(1)
        )
        return found.first() is not None

    async def set_aside_vanished(self, channel: Wallet, withdrawal_id: str) -> None:
        """A leased channel whose account no longer exists on chain (a network reset): free the
        lease and set it aside; the next ChannelAccountsWorkflow run re-creates it."""
        async with self._sessions() as session, session.begin():
            await session.exec(
                sa.update(ChannelAccount)
                .where(col(ChannelAccount.wallet_id) == channel.id, col(ChannelAccount.leased_by) == withdrawal_id)
                .values(state=ChannelState.UNDERFUNDED, leased_by=None, updated_at=utcnow())
            )
        metrics.CHANNEL_LEASES.labels(chain=channel.chain, result="vanished").inc()
        log.warning("leased channel account vanished from the chain: set aside", extra={"channel": channel.address})

    async def held(self, withdrawal_id: str) -> Wallet | None:
        """The channel the withdrawal leases now, if any."""
        async with self._sessions() as session:
            row = (await session.exec(select(ChannelAccount).where(ChannelAccount.leased_by == withdrawal_id))).first()
            return None if row is None else await session.get(Wallet, row.wallet_id)

    @staticmethod
    async def release(session: AsyncSession, withdrawal_id: str) -> None:
        """In the withdrawal's final transaction: its channel is free for the next one."""
        await session.exec(
            sa.update(ChannelAccount).where(col(ChannelAccount.leased_by) == withdrawal_id).values(leased_by=None, updated_at=utcnow())
        )


class ChannelActivities:
    """ChannelAccountsWorkflow's steps; each decides under a per-chain advisory lock and inserts
    rows idempotently, so a retried step or an overlapping run reaches the same rows."""

    def __init__(self, sessions: SessionFactory, chains: ChainRegistry, settings: Settings) -> None:
        self._sessions = sessions
        self._chains = chains
        self._settings = settings

    def _channels(self, chain: str) -> ChannelSettings:
        channels = channel_settings(self._chains, chain)
        if channels is None:
            raise NotAvailable("no channel accounts are configured for this chain", chain=chain)
        return channels

    @activity.defn(name="channels_plan_wallets")
    async def plan_wallets(self, chain: str) -> ChannelPlan:
        """Rows for every position without a live channel; returns the wallets still CREATING."""
        chain = chain.lower()
        channels = self._channels(chain)
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "channels", chain)
            rows = await self._sync_created(session, chain)
            taken = {row.position for row, _ in rows if row.state != ChannelState.FAILED}
            for position in range(channels.count):
                if position in taken:
                    continue
                failed_before = sum(1 for row, _ in rows if row.position == position)
                wallet = Wallet(
                    id=str(uuid.uuid4()),
                    owner=channel_owner(chain),
                    chain=chain,
                    label=f"channel-{position}" + (f"-{failed_before}" if failed_before else ""),
                    signer_backend=self._settings.signer_backend,
                    idempotency_key=f"channel:{chain}:{position}:{failed_before}",
                )
                session.add(wallet)
                await session.flush()
                session.add(ChannelAccount(wallet_id=wallet.id, chain=chain, position=position))
            await session.flush()
            creating = await self._rows(session, chain, ChannelState.CREATING)
            return ChannelPlan(wallets=[w.id for row, w in creating if w.status == "CREATING"])

    @activity.defn(name="channels_plan_funding")
    async def plan_funding(self, chain: str) -> ChannelPlan:
        """READY what is funded on chain; the rest: friendbot, or a withdrawal from the funding wallet."""
        chain = chain.lower()
        channels = self._channels(chain)
        adapter = self._chains.get(chain)
        native = adapter.asset(adapter.settings.native_symbol)
        plan = ChannelPlan()
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "channels", chain)
            await self._sync_created(session, chain)
        await self._set_aside_spent(chain)
        await self._settle(chain)
        async with self._sessions() as session, session.begin():
            await advisory_lock(session, "channels", chain)
            unfunded = await self._rows(session, chain, ChannelState.FUNDING, ChannelState.UNDERFUNDED)
            funder = await self._funding_wallet(session, chain, channels)
            for row, wallet in unfunded:
                assert wallet.address is not None
                if funder is None:
                    # Friendbot only creates accounts: a new channel, or one a reset test
                    # network forgot (fund_from_faucet leaves an existing account alone).
                    if adapter.settings.faucet_enabled and await adapter.balance(wallet.address, native) == 0:
                        plan.faucet.append(wallet.id)
                    else:
                        plan.notes.append(f"{wallet.label} ({row.state}) needs XLM: set channels.funding_wallet_id or send to {wallet.address}")
                    continue
                target = units(channels.starting_balance, native.decimals)
                held = await adapter.balance(wallet.address, native)
                # A new account gets create_account (starting balance, reserve included); an
                # existing one is topped up to what its spendable balance started at.
                exists = row.state == ChannelState.UNDERFUNDED or held > 0
                amount = target - held - (units("1", native.decimals) if exists else 0)
                funding = await self._funding_withdrawal(session, chain, row, wallet, funder, max(amount, 1), native.symbol)
                if funding.status not in {s.value for s in WithdrawalStatus if s.is_final}:
                    plan.transfers.append(funding.id)
            return plan

    @activity.defn(name="channels_fund_from_faucet")
    async def fund_from_faucet(self, wallet_id: str) -> str:
        """Friendbot's create_account applies at most once per account: retrying is safe."""
        async with self._sessions() as session:
            wallet = await session.get(Wallet, wallet_id)
        if wallet is None or wallet.address is None:
            raise WalletNotFound("no such channel wallet", wallet_id=wallet_id)
        adapter = self._chains.get(wallet.chain)
        native = adapter.asset(adapter.settings.native_symbol)
        if await adapter.balance(wallet.address, native) > 0:
            return "already funded"
        try:
            # Friendbot funds its own fixed amount (10,000 XLM on testnet), not starting_balance.
            return (await adapter.faucet(wallet.address, native, None)).tx_hash
        except (AlreadyFunded, SubmissionFailed):
            # Friendbot refuses an account that exists: an earlier try (lost response) made it.
            if await adapter.balance(wallet.address, native) > 0:
                return "already funded"
            raise

    @activity.defn(name="channels_finish")
    async def finish(self, chain: str) -> ChannelSetResult:
        chain = chain.lower()
        self._channels(chain)
        await self._settle(chain)
        result = ChannelSetResult(chain=chain)
        async with self._sessions() as session:
            for row, _ in await self._rows(session, chain):
                if row.state == ChannelState.READY:
                    result.ready += 1
                elif row.state == ChannelState.UNDERFUNDED:
                    result.underfunded += 1
                elif row.state == ChannelState.FAILED:
                    result.failed += 1
                else:
                    result.pending += 1
        metrics.CHANNELS.labels(chain=chain, state="READY").set(result.ready)
        metrics.CHANNELS.labels(chain=chain, state="UNDERFUNDED").set(result.underfunded)
        return result

    # --- helpers ---------------------------------------------------------------------------
    async def _rows(self, session: AsyncSession, chain: str, *states: str) -> list[tuple[ChannelAccount, Wallet]]:
        query = (
            select(ChannelAccount, Wallet)
            .join(Wallet, col(Wallet.id) == col(ChannelAccount.wallet_id))
            .where(ChannelAccount.chain == chain)
            .order_by(col(ChannelAccount.position), col(ChannelAccount.created_at))
        )
        if states:
            query = query.where(col(ChannelAccount.state).in_(states))
        return [(row, wallet) for row, wallet in (await session.exec(query)).all()]

    async def _sync_created(self, session: AsyncSession, chain: str) -> list[tuple[ChannelAccount, Wallet]]:
        """Channels follow their wallet's creation: FUNDING once it is ACTIVE, else FAILED."""
        rows = await self._rows(session, chain)
        for row, wallet in rows:
            if row.state == ChannelState.CREATING and wallet.status in ("ACTIVE", "FAILED"):
                row.state = ChannelState.FUNDING if wallet.status == "ACTIVE" else ChannelState.FAILED
                row.updated_at = utcnow()
                session.add(row)
        return rows

    async def _set_aside_spent(self, chain: str) -> None:
        """READY channels no longer funded (fees spent, or a test network reset) are set aside
        before a withdrawal leases them."""
        await self._restate(chain, [ChannelState.READY], ChannelState.UNDERFUNDED, funded=False)

    async def _settle(self, chain: str) -> None:
        """FUNDING / UNDERFUNDED channels whose spendable XLM is back above the minimum: READY."""
        await self._restate(chain, [ChannelState.FUNDING, ChannelState.UNDERFUNDED], ChannelState.READY, funded=True)

    async def _restate(self, chain: str, states: list[str], target: str, *, funded: bool) -> None:
        """Move the free channels in `states` whose spendable XLM is (funded) or is not (not
        funded) at least `min_balance` to `target`; a leased channel is in use and left alone."""
        channels = self._channels(chain)
        adapter = self._chains.get(chain)
        native = adapter.asset(adapter.settings.native_symbol)
        minimum = units(channels.min_balance, native.decimals)
        async with self._sessions() as session:
            candidates = await self._rows(session, chain, *states)
        moving = [
            row.wallet_id
            for row, wallet in candidates
            if row.leased_by is None and wallet.address is not None and (await adapter.balance(wallet.address, native) >= minimum) == funded
        ]
        if not moving:
            return
        async with self._sessions() as session, session.begin():
            await session.exec(
                sa.update(ChannelAccount)
                .where(
                    col(ChannelAccount.wallet_id).in_(moving),
                    col(ChannelAccount.state).in_(states),
                    col(ChannelAccount.leased_by).is_(None),
                )
                .values(state=target, updated_at=utcnow())
            )
        log.info("channel accounts restated", extra={"chain": chain, "state": target, "count": len(moving)})

    async def _funding_wallet(self, session: AsyncSession, chain: str, channels: ChannelSettings) -> Wallet | None:
        if channels.funding_wallet_id is None:
            return None
        wallet = await session.get(Wallet, channels.funding_wallet_id)
        if wallet is None or wallet.chain != chain or wallet.status != "ACTIVE":
            raise PermanentError("channels.funding_wallet_id is not an active wallet on this chain", wallet_id=channels.funding_wallet_id)
        return wallet

    async def _funding_withdrawal(
        self, session: AsyncSession, chain: str, row: ChannelAccount, channel: Wallet, funder: Wallet, amount: int, asset: str
    ) -> Withdrawal:
        """One withdrawal per funding round of a channel: its key chains from the previous round,
        so a retry or a second run finds the same row instead of funding twice."""
        previous = row.funding_withdrawal_id
        if previous is not None:
            last = await session.get(Withdrawal, previous)
            if last is not None and not WithdrawalStatus(last.status).is_final:
                return last
        key = f"channel-funding:{channel.id}:{previous or 'first'}"
        existing = (await session.exec(select(Withdrawal).where(Withdrawal.owner == funder.owner, Withdrawal.idempotency_key == key))).first()
        if existing is None:
            assert channel.address is not None
            existing = Withdrawal(
                id=str(uuid.uuid4()),
                owner=funder.owner,
                wallet_id=funder.id,
                chain=chain,
                asset=asset,
                destination=channel.address,
                amount=amount,
                idempotency_key=key,
                request_hash=hashlib.sha256(f"{key}|{channel.address}|{amount}".encode()).hexdigest(),
                requested_by=f"channels:{chain}",
            )
            seal(self._settings.intent_seal_key_bytes, existing)
            session.add(existing)
            await session.flush()
            session.add(WithdrawalEvent(withdrawal_id=existing.id, status="PENDING", detail={"channel": channel.id, "position": row.position}))
            await audit.append(
                session,
                actor=f"channels:{chain}",
                action="channel.funding_requested",
                object_type="withdrawal",
                object_id=existing.id,
                details={"chain": chain, "channel_wallet": channel.id, "position": row.position, "from_wallet": funder.id, "amount": str(amount)},
            )
            metrics.WITHDRAWALS_REQUESTED.labels(chain=chain, asset=asset).inc()
        row.funding_withdrawal_id = existing.id
        row.updated_at = utcnow()
        session.add(row)
        return existing
