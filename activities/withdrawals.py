"""Withdrawal activities. Each one is idempotent: a retry finds its own earlier effect
(status event, reservation, nonce claim, signed attempt) and returns it instead of repeating it.

The exactly-once rule (NOTES section 1): the nonce claim and the signed bytes are committed in
one PostgreSQL transaction before anything is broadcast; broadcasting only ever re-sends stored
bytes; a new signature for the same withdrawal is made only as a fee-bumped replacement inside
the same nonce.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from activities.access import ONE_APPROVER, SigningStep, approval_refusal, refusal_to_sign, stop_requested
from activities.alerts import record_withdrawal_alert
from activities.channels import ChannelLeases
from activities.errors import crash_point
from activities.locks import KeyedLocks, advisory_lock
from activities.policy import PolicyJudge, PolicySettings
from activities.signing_guard import (
    CANCEL,
    SWEEP,
    TRANSFER,
    TRUSTLINE,
    Expectation,
    GuardedSigner,
    require_seal,
)
from activities.transfers import as_signed, attempts_of, transfer_intent
from chains.base import Chain, ChannelKey, DigestSigner, SignedTransfer, TransferIntent, TransferStatus
from chains.registry import ChainRegistry
from core import metrics
from core.errors import (
    AlreadyFinal,
    CustodyError,
    FeeAboveCap,
    FeeTooLow,
    InsufficientFunds,
    PermanentError,
    WalletInactive,
    WalletNotFound,
    WithdrawalNotFound,
)
from core.settings import DEV_INTENT_SEAL_KEY, ChainSettingsBase
from db import audit
from db import policy as policy_store
from db.engine import SessionFactory
from db.reservations import held_funds
from db.webhook_outbox import withdrawal_event_row
from models.db import (
    Reservation,
    SequenceClaim,
    TransferAttempt,
    Wallet,
    Withdrawal,
    WithdrawalEvent,
    utcnow,
)
from models.intent_seal import seal
from models.payloads import (
    LANDED_OUTCOMES,
    AlertEvent,
    ConfirmationResult,
    ControlEvent,
    GapFill,
    OnChainState,
    PreparedAttempt,
    SentAttempt,
    StatusChange,
    ValidationResult,
    WithdrawalStatus,
)
from models.pools import PoolKey, PoolTier
from models.webhooks import WebhookOutboxEvent
from signers.registry import SignerSet

# Actors of audit entries written by the system itself (people are named by their identity).
WORKFLOW_ACTOR, SIGNER_ACTOR = "system:workflow", "system:signer"
# A 0-value self-send that uses up a nonce no other transaction of ours will (see fill_sequence_gaps).
GAP_FILL = "GAP_FILL"


# The statuses a withdrawal passes through before it is final, in order (see _enter_step).
_STEP_ORDER = (
    WithdrawalStatus.PENDING,
    WithdrawalStatus.VALIDATING,
    WithdrawalStatus.AWAITING_APPROVAL,
    WithdrawalStatus.SIGNING,
    WithdrawalStatus.BROADCASTING,
    WithdrawalStatus.CONFIRMING,
)


async def _record_transition(
    session: AsyncSession,
    withdrawal: Withdrawal,
    status: WithdrawalStatus,
    detail: dict[str, str],
    *,
    at: datetime | None = None,
    audit_details: dict[str, str] | None = None,
) -> None:
    """A status change with its history event, webhook outbox row and audit entry (`detail`,
    or `audit_details` where the audit says more), in the caller's transaction. The row, the
    event and the outbox row are one statement (issue 14: a withdrawal makes five transitions,
    and each statement is a round trip); the session's copy of the row takes the new status."""
    now = at or utcnow()
    recorded = sa.insert(WithdrawalEvent).values(withdrawal_id=withdrawal.id, status=status.value, detail=detail, at=now).cte("recorded_event")
    # webhooks: one outbox row, showing the withdrawal as it is once this change is made
    outbox_row = withdrawal_event_row(withdrawal, status.value, detail, status=status.value)
    announced = sa.insert(WebhookOutboxEvent).values(**outbox_row).cte("announced_event")
    change = (
        sa.update(Withdrawal)
        .where(col(Withdrawal.id) == withdrawal.id)
        .values(status=status.value, updated_at=now)
        .add_cte(recorded)
        .add_cte(announced)
        .execution_options(synchronize_session="evaluate")
    )
    await session.exec(change)
    await audit.append(
        session,
        actor=WORKFLOW_ACTOR,
        action=f"withdrawal.{status.value.lower()}",
        object_type="withdrawal",
        object_id=withdrawal.id,
        details=detail if audit_details is None else audit_details,
    )


class _Blocked(Exception):
    """Leaves a signing transaction (rolling it back) when the fee cap allows no new attempt."""

    def __init__(self, cause: FeeAboveCap) -> None:
        super().__init__(cause.message)
        self.cause = cause


@dataclass
class BumpInput:
    withdrawal_id: str
    replaces_tx_hash: str


@dataclass
class ResignInput:
    withdrawal_id: str
    expired_tx_hash: str


@dataclass
class FinishInput:
    withdrawal_id: str
    status: WithdrawalStatus
    outcome: ConfirmationResult | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class WithdrawalPolicy:
    """Approval rules: above `approval_thresholds[(chain, asset)]` base units (counting what the
    wallet sent without approval in the last `approval_threshold_window_seconds`: a rule of the
    policy engine, activities/policy.py), a second person must approve within
    `approval_timeout_seconds`."""

    approval_thresholds: dict[tuple[str, str], int]
    approval_timeout_seconds: int = 86_400
    # Key pools: a movement out of a chain's HODL key above this (native base units) needs an
    # operator's approval; a chain without an entry approves every HODL movement by hand.
    hodl_auto_approve: dict[str, int] = field(default_factory=dict)
    # Confirmation rounds a WithdrawalWorkflow run makes before it continues as new.
    rounds_per_run: int = 100
    # The key every withdrawal's intent is sealed with (models/intent_seal.py).
    intent_seal_key: bytes = field(default_factory=lambda: base64.b64decode(DEV_INTENT_SEAL_KEY))
    approval_threshold_window_seconds: int = 86_400

    def policy_settings(self) -> PolicySettings:
        return PolicySettings(self.approval_thresholds, self.approval_threshold_window_seconds, self.hodl_auto_approve)


async def _settle_attempt_states(session: AsyncSession, withdrawal_id: str, landed: ConfirmationResult | None) -> None:
    """A final withdrawal's attempts end LANDED (the transfer, or our cancellation), REVERTED (on
    chain, transfer undone) or NOT_LANDED (replaced, expired, or never sent)."""
    await session.exec(sa.update(TransferAttempt).where(col(TransferAttempt.withdrawal_id) == withdrawal_id).values(state="NOT_LANDED"))
    if landed is not None and landed.tx_hash:
        await session.exec(
            sa.update(TransferAttempt)
            .where(col(TransferAttempt.withdrawal_id) == withdrawal_id, col(TransferAttempt.tx_hash) == landed.tx_hash)
            .values(state="REVERTED" if landed.state == OnChainState.REVERTED else "LANDED")
        )


# What the send step keeps of its start-to-close timeout after its finality wait: a step that
# timed out would be retried, and its retry would send the same bytes again only to wait again.
SEND_STEP_MARGIN_SECONDS = 5.0


# What await_confirmation keeps of its start-to-close timeout while it waits for a transfer in a
# block to become final: it answers before the server would time it out (and retry it).
CONFIRMATION_MARGIN_SECONDS = 30.0


def finality_wait_after_send(settings: ChainSettingsBase, seconds_left_in_step: float) -> float:
    """How long the send step looks for a final outcome after the send: the chain's
    `finality_wait_in_send_step_seconds`, never past its bump delay (the confirmation loop's
    business) nor into the last SEND_STEP_MARGIN_SECONDS of the step's timeout."""
    wait = min(settings.finality_wait_in_send_step_seconds, settings.fee_bump_after_seconds, seconds_left_in_step - SEND_STEP_MARGIN_SECONDS)
    return max(wait, 0.0)


def _confirmation(status: TransferStatus, attempts: list[SignedTransfer]) -> ConfirmationResult:
    """What the workflow is told of a look at the chain."""
    return ConfirmationResult(
        state=status.state,
        tx_hash=status.tx_hash or (attempts[-1].tx_hash if attempts else None),
        block_number=status.block_number,
        fee_paid=status.fee_paid,
        detail=status.detail,
    )


def _prepared(attempts: list[TransferAttempt], blocked: FeeAboveCap | None = None) -> PreparedAttempt:
    latest = attempts[-1]
    prepared = PreparedAttempt(tx_hash=latest.tx_hash, sequence=latest.sequence, attempt_count=len(attempts))
    if blocked is not None:
        # No replacement now: the attempts already out stay as they are and keep being confirmed;
        # the workflow alerts and tries again next round (fees fall, the cap is raised).
        prepared.blocked, prepared.blocked_reason = "STUCK_AT_FEE_CAP", blocked.message
    return prepared


@dataclass
class _Loaded:
    """A withdrawal, its wallet and its attempts, as read by the transaction that opened a step:
    the later transactions of the same step reuse them (issue 14: each load is a round trip).
    What may change meanwhile (a hold, a cancellation, a new attempt) is read again where it matters."""

    withdrawal: Withdrawal
    wallet: Wallet
    attempts: list[TransferAttempt]


@dataclass
class _Signed:
    prepared: PreparedAttempt
    loaded: _Loaded
    # Signed by this very try: nothing can have sent it yet. An attempt found already signed
    # (a retry) may be out, sent by a try that died before Temporal heard of it.
    fresh: bool = False


class WithdrawalActivities:
    def __init__(
        self,
        sessions: SessionFactory,
        chains: ChainRegistry,
        signers: SignerSet,
        policy: WithdrawalPolicy | None = None,
        judge: PolicyJudge | None = None,
    ) -> None:
        self._sessions = sessions
        self._chains = chains
        self._signers = signers
        self._locks = KeyedLocks()
        self._channels = ChannelLeases(sessions, chains)
        self._policy = policy or WithdrawalPolicy(approval_thresholds={})
        # The policy engine: its re-check right before a first signature.
        self._judge = judge or PolicyJudge(sessions, chains, self._policy.policy_settings())

    # --- loading ---------------------------------------------------------------------------
    async def _load(self, session: AsyncSession, withdrawal_id: str) -> tuple[Withdrawal, Wallet]:
        withdrawal = await session.get(Withdrawal, withdrawal_id)
        if withdrawal is None:
            raise WithdrawalNotFound("no such withdrawal", withdrawal_id=withdrawal_id)
        return withdrawal, await self._wallet_of(session, withdrawal)

    @staticmethod
    async def _wallet_of(session: AsyncSession, withdrawal: Withdrawal) -> Wallet:
        wallet = await session.get(Wallet, withdrawal.wallet_id)
        if wallet is None or wallet.owner != withdrawal.owner:
            raise WalletNotFound("wallet not found for this owner", wallet_id=withdrawal.wallet_id)
        return wallet

    async def _signing_intent(self, session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet) -> TransferIntent:
        """The intent to sign: a sweep also carries the exact fee fixed with its amount at reserve time."""
        intent = self._intent(withdrawal, wallet)
        if not withdrawal.sweep:
            return intent
        reservation = await session.get(Reservation, withdrawal.id)
        if reservation is None:
            raise PermanentError("a sweep is signed only after its amount is fixed by reserve_funds", withdrawal_id=withdrawal.id)
        return dataclasses.replace(intent, amount=withdrawal.amount, fee=reservation.fee_amount)

    @asynccontextmanager
    async def _slot_serialized(
        self, withdrawal_id: str, *, with_channel: bool = False, new_slot: bool = False, loaded: _Loaded | None = None
    ) -> AsyncIterator[Wallet | None]:
        """Queue behind this worker's other signers for the same slot owner (the wallet, or the
        channel account the withdrawal leases: yielded) before borrowing a database connection
        (see activities/locks.py); the advisory lock on the same key then covers other workers.
        `new_slot`: a re-sign, whose held channel may have vanished from the chain meanwhile.
        `loaded`: what the step has read already (otherwise read here)."""
        if loaded is None:
            async with self._sessions() as session:
                withdrawal, wallet = await self._load(session, withdrawal_id)
                attempts = await self._attempts(session, withdrawal_id)
        else:
            withdrawal, wallet, attempts = loaded.withdrawal, loaded.wallet, loaded.attempts
        channel = None
        if with_channel:
            # Only a first attempt takes a channel; later ones (a retried step, a re-sign after
            # expiry) keep the source the withdrawal already has: its channel, or the wallet. A
            # re-sign whose channel vanished (handed back below) takes another, or waits for one.
            on_channel = any((a.fee_params or {}).get("source") for a in attempts)
            if not attempts or (on_channel and new_slot):
                channel = await self._channels.lease(withdrawal)
            elif on_channel:
                channel = await self._channels.held(withdrawal.id)
            if channel is not None and new_slot and not await self._chains.get(withdrawal.chain).account_exists(channel.address or ""):
                # Gone from the chain (a network reset): its sequence numbers mean nothing now.
                # Set it aside for the channel-set run to re-create; sign on another source.
                await self._channels.set_aside_vanished(channel, withdrawal.id)
                channel = await self._channels.lease(withdrawal)
        owner = channel if channel is not None else wallet
        async with self._locks.hold("sender", withdrawal.chain, owner.address or owner.id):
            yield channel

    def _intent(self, withdrawal: Withdrawal, wallet: Wallet) -> TransferIntent:
        return transfer_intent(self._chains.get(withdrawal.chain), withdrawal, wallet)

    async def _attempts(self, session: AsyncSession, withdrawal_id: str) -> list[TransferAttempt]:
        return await attempts_of(session, withdrawal_id)

    def _signer_for(self, wallet: Wallet) -> DigestSigner:
        """Sign with the backend the wallet's key lives in, whatever today's default is."""
        scheme = self._chains.get(wallet.chain).key_scheme
        key_ref = wallet.key_ref
        assert key_ref is not None
        signer = self._signers.get(wallet.signer_backend)

        async def sign(message: bytes) -> bytes:
            started = time.perf_counter()
            try:
                return await signer.sign(key_ref, scheme, message)
            finally:
                metrics.SIGNING_SECONDS.labels(backend=signer.backend).observe(time.perf_counter() - started)

        return sign

    def _needs_approval(self, withdrawal: Withdrawal, pool_key: PoolKey | None) -> bool:
        """Four eyes: above the (chain, asset) threshold, or a HODL movement above its limit."""
        threshold = self._policy.approval_thresholds.get((withdrawal.chain, withdrawal.asset))
        needs_approval = threshold is not None and withdrawal.amount > threshold
        if pool_key is not None and pool_key.tier == PoolTier.HODL:
            hodl_limit = self._policy.hodl_auto_approve.get(withdrawal.chain)
            needs_approval = needs_approval or hodl_limit is None or withdrawal.amount > hodl_limit
        return needs_approval

    async def _refusal_to_sign(self, withdrawal_id: str, step: SigningStep) -> tuple[CustodyError | None, list[TransferAttempt]]:
        """The access re-check before a new signature (`_refusal_in`), with the withdrawal's attempts so far."""
        async with self._sessions() as session, session.begin():
            withdrawal, wallet = await self._load(session, withdrawal_id)
            attempts = await self._attempts(session, withdrawal_id)
            return await self._refusal_in(session, withdrawal, wallet, attempts, step), attempts

    async def _refusal_in(
        self, session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet, attempts: list[TransferAttempt], step: SigningStep
    ) -> CustodyError | None:
        """The access re-check before a new signature (activities/access.py), from the database
        alone, in the caller's transaction (which records the policy's re-check). A first
        attempt already made is never refused: the retry returns it (it may already be out).
        Before a first attempt the policy judges the withdrawal again (activities/policy.py): a
        rule that now blocks it or a limit it now exceeds refuses, and the approvals checked
        are the ones the policy asks for now."""
        if step == SigningStep.FIRST and attempts:
            return None
        # Blocks, freezes and holds first, at once (a pause placed after this point holds the
        # withdrawal after its signature, before it is sent).
        refusal = await refusal_to_sign(session, withdrawal, wallet, step)
        if refusal is not None or step != SigningStep.FIRST:
            return refusal
        pool_key = await session.get(PoolKey, wallet.id) if wallet.owner.startswith("pool:") else None
        quorum = ONE_APPROVER if self._needs_approval(withdrawal, pool_key) else None
        recheck = await self._judge.recheck_in(session, withdrawal.id)
        if recheck is not None:  # None: accepted before the policy engine, the threshold alone
            if recheck.refusal is not None:
                return recheck.refusal
            quorum = recheck.quorum
        return None if quorum is None else await approval_refusal(session, withdrawal, quorum)

    async def _held_back(self, withdrawal_id: str, step: SigningStep) -> PreparedAttempt | None:
        """For replacements and re-signs: a refusal comes back `blocked` (alerted by the
        workflow, tried again next round) so the attempts already out keep being confirmed."""
        refusal, attempts = await self._refusal_to_sign(withdrawal_id, step)
        if refusal is None or not attempts:
            return None
        activity.logger.warning("signing refused by the access re-check", extra={"error_code": refusal.code, "step": step.value})
        prepared = _prepared(attempts)
        prepared.blocked, prepared.blocked_reason = refusal.code, refusal.message
        return prepared

    # --- steps -----------------------------------------------------------------------------
    @activity.defn(name="record_withdrawal_status")
    async def record_status(self, change: StatusChange) -> None:
        """Persist a status transition and its history event (once, however often retried)."""
        async with self._sessions() as session, session.begin():
            withdrawal = await self._locked_unfinished(session, change.withdrawal_id)
            if withdrawal.status != change.status.value:
                await _record_transition(session, withdrawal, change.status, change.detail)

    async def _enter_step(self, session: AsyncSession, withdrawal_id: str, status: WithdrawalStatus) -> Withdrawal:
        """The status a step stands for, recorded by the step itself in the transaction that
        opens it (the workflow's runs with the `folded-steps` marker schedule no record_status
        of their own): forward only, so a re-send from the confirm loop leaves CONFIRMING as it
        is, and once per status however often the step is retried. A final withdrawal raises
        ALREADY_FINAL: a reset run of a finished workflow changes nothing. The withdrawal's row
        stays locked until that transaction ends."""
        withdrawal = await self._locked_unfinished(session, withdrawal_id)
        if _STEP_ORDER.index(WithdrawalStatus(withdrawal.status)) < _STEP_ORDER.index(status):
            await _record_transition(session, withdrawal, status, {})
        return withdrawal

    @staticmethod
    async def _locked_unfinished(session: AsyncSession, withdrawal_id: str) -> Withdrawal:
        withdrawal = await session.get(Withdrawal, withdrawal_id, with_for_update=True)
        if withdrawal is None:
            raise WithdrawalNotFound("no such withdrawal", withdrawal_id=withdrawal_id)
        if WithdrawalStatus(withdrawal.status).is_final:
            # A reset run of a finished workflow: its outcome stands; nothing may be redone.
            raise AlreadyFinal(f"withdrawal is already {withdrawal.status}", status=withdrawal.status)
        return withdrawal

    @activity.defn(name="record_operator_action")
    async def record_control(self, event: ControlEvent) -> None:
        """Persist pause / resume / cancel request / approval, with who and why."""
        async with self._sessions() as session, session.begin():
            withdrawal = await session.get(Withdrawal, event.withdrawal_id, with_for_update=True)
            if withdrawal is None:
                raise WithdrawalNotFound("no such withdrawal", withdrawal_id=event.withdrawal_id)
            if event.event in ("PAUSED", "RESUMED"):
                # A final withdrawal is never paused (a PAUSED recorded after `finish` changes nothing).
                withdrawal.paused = event.event == "PAUSED" and not WithdrawalStatus(withdrawal.status).is_final
                withdrawal.paused_by = event.by if withdrawal.paused else None
                withdrawal.paused_reason = event.reason if withdrawal.paused else None
            elif event.event == "CANCEL_REQUESTED":
                withdrawal.cancel_requested_by = event.by
            elif event.event == "APPROVED":
                withdrawal.approved_by = event.by
            withdrawal.updated_at = utcnow()
            session.add(withdrawal)
            session.add(WithdrawalEvent(withdrawal_id=withdrawal.id, status=event.event, detail={"by": event.by, "reason": event.reason}))
            await audit.append(
                session,
                actor=event.by,
                action=f"withdrawal.{event.event.lower()}",
                object_type="withdrawal",
                object_id=withdrawal.id,
                details={"reason": event.reason},
            )

    @activity.defn(name="validate_withdrawal")
    async def validate(self, withdrawal_id: str) -> ValidationResult:
        """Wallet exists, is the caller's and active; asset known; destination well-formed."""
        async with self._sessions() as session, session.begin():
            withdrawal = await self._enter_step(session, withdrawal_id, WithdrawalStatus.VALIDATING)
            wallet = await self._wallet_of(session, withdrawal)
            pool_key = await session.get(PoolKey, wallet.id) if wallet.owner.startswith("pool:") else None
        if wallet.status != "ACTIVE" or wallet.address is None:
            raise WalletInactive("wallet is not active", wallet_id=wallet.id)
        if wallet.chain != withdrawal.chain:
            raise WalletNotFound("wallet is on another chain", wallet_id=wallet.id)
        intent = self._intent(withdrawal, wallet)  # raises INVALID_RECIPIENT / UNKNOWN_ASSET
        chain = self._chains.get(withdrawal.chain)
        if withdrawal.sweep:
            # The amount is fixed at reserve time (everything - the exact fee).
            if not intent.asset.is_native:
                raise PermanentError("a sweep moves the chain's native asset")
        elif intent.trustline:
            if not chain.has_trustlines or intent.asset.is_native or intent.destination != intent.sender:
                raise PermanentError("a trustline is a credit asset's, on a chain with trustlines, to the wallet itself")
        elif withdrawal.kind == GAP_FILL:
            if not chain.queues_future_sequences or not intent.asset.is_native or intent.destination != intent.sender or intent.amount != 0:
                raise PermanentError("a gap fill is a 0-value native self-send, on a chain whose nonces queue")
        elif intent.amount <= 0:
            raise PermanentError("amount must be positive")
        await chain.preflight(intent)
        needs_approval = self._needs_approval(withdrawal, pool_key)
        return ValidationResult(
            requested_by=withdrawal.requested_by or withdrawal.owner,
            needs_approval=needs_approval,
            approval_timeout_seconds=self._policy.approval_timeout_seconds,
            cancellable_after_broadcast=chain.replaceable_in_slot,
            fills_sequence_gaps=chain.queues_future_sequences and withdrawal.kind != GAP_FILL,
            rounds_per_run=self._policy.rounds_per_run,
        )

    @activity.defn(name="validate_and_decide_withdrawal")
    async def validate_and_decide(self, withdrawal_id: str) -> ValidationResult:
        """validate_withdrawal, then the policy's decision (decide_withdrawal_policy) in the same
        activity: one step fewer per withdrawal. Both are safe to repeat: a retry validates again
        and returns the decision recorded by the first try."""
        validation = await self.validate(withdrawal_id)
        validation.verdict = await self._judge.decide(withdrawal_id)
        return validation

    @activity.defn(name="record_withdrawal_alert")
    async def record_alert(self, alert: AlertEvent) -> None:
        """An operator must look (activities/alerts.py); the withdrawal itself goes on."""
        await record_withdrawal_alert(self._sessions, alert.withdrawal_id, alert.code, alert.message)

    @activity.defn(name="fill_sequence_gaps")
    async def fill_sequence_gaps(self, withdrawal_id: str) -> GapFill:
        """Nonces below this withdrawal's that no transaction of ours will use (released by a
        withdrawal that ended before its transaction could land) stall it: each such gap gets
        a 0-value self-send from the same sender (a withdrawal of kind GAP_FILL, holding the
        gap's nonce), which the workflow starts as a child. Idempotent per gap and releaser."""
        async with self._sessions() as session:
            withdrawal, wallet = await self._load(session, withdrawal_id)
        chain = self._chains.get(withdrawal.chain)
        sender = wallet.address
        if not chain.queues_future_sequences or withdrawal.nonce is None or sender is None:
            return GapFill()
        settled = await chain.settled_sequence(sender)
        if settled is None or settled >= withdrawal.nonce:
            return GapFill()
        native = chain.asset(chain.settings.native_symbol)
        async with self._locks.hold("sender", withdrawal.chain, sender), self._sessions() as session, session.begin():
            await advisory_lock(session, "sender", withdrawal.chain, sender)
            rows = await session.exec(
                select(SequenceClaim)
                .where(
                    SequenceClaim.chain == withdrawal.chain,
                    SequenceClaim.sender == sender,
                    SequenceClaim.sequence >= settled,
                    SequenceClaim.sequence < withdrawal.nonce,
                )
                .order_by(col(SequenceClaim.sequence))
            )
            claims = {c.sequence: c for c in rows.all()}
            fill = GapFill(gaps=[n for n in range(settled, withdrawal.nonce) if n not in claims or claims[n].state == "RELEASED"])
            for sequence in fill.gaps:
                claim = claims.get(sequence)
                released_by = claim.withdrawal_id if claim is not None else "unclaimed"
                key = f"gap-fill:{released_by}:{sequence}"
                existing = (await session.exec(select(Withdrawal).where(Withdrawal.owner == wallet.owner, Withdrawal.idempotency_key == key))).first()
                if existing is not None:
                    fill.fillers.append(existing.id)
                    continue
                filler = seal(
                    self._policy.intent_seal_key,
                    Withdrawal(
                        id=str(uuid.uuid4()),
                        kind=GAP_FILL,
                        owner=wallet.owner,
                        wallet_id=wallet.id,
                        chain=withdrawal.chain,
                        asset=native.symbol,
                        destination=sender,
                        amount=0,
                        idempotency_key=key,
                        request_hash=key,
                        requested_by="custody:gap-filler",
                        nonce=sequence,
                    ),
                )
                session.add(filler)
                session.add(
                    WithdrawalEvent(withdrawal_id=filler.id, status="PENDING", detail={"fills_nonce": str(sequence), "stalled": withdrawal.id})
                )
                await session.flush()
                await self._take_claim(session, filler, sender, sequence)
                fill.fillers.append(filler.id)
        if fill.gaps:
            activity.logger.warning("nonce gap below a stalled withdrawal: filling", extra={"gaps": fill.gaps, "fillers": fill.fillers})
        return fill

    @activity.defn(name="reserve_funds")
    async def reserve(self, withdrawal_id: str) -> None:
        """Hold amount + max fee against the on-chain balance minus other in-flight holds."""
        async with self._sessions() as session:
            withdrawal, wallet = await self._load(session, withdrawal_id)
            if await session.get(Reservation, withdrawal_id) is not None:
                return
        chain = self._chains.get(withdrawal.chain)
        intent = self._intent(withdrawal, wallet)
        if withdrawal.sweep:
            await self._reserve_sweep(withdrawal, wallet, intent)
            return
        native = chain.asset(chain.settings.native_symbol)
        fee = await chain.estimate_max_fee(intent)
        native_balance = await chain.balance(intent.sender, native)
        asset_balance = native_balance if intent.asset.is_native else await chain.balance(intent.sender, intent.asset)

        async with self._locks.hold("wallet", wallet.id), self._sessions() as session, session.begin():
            await advisory_lock(session, "wallet", wallet.id)
            if await session.get(Reservation, withdrawal_id) is not None:
                return
            held = await held_funds(session, wallet.id)
            held_native, held_asset = held.native(native.symbol), held.of(intent.asset.symbol)
            if intent.asset.is_native:
                needed, available = intent.amount + fee, native_balance - held_native
            else:
                if asset_balance - held_asset < intent.amount:
                    raise InsufficientFunds(
                        f"{intent.asset.symbol} balance is insufficient",
                        available=str(max(asset_balance - held_asset, 0)),
                        needed=str(intent.amount),
                    )
                needed, available = fee, native_balance - held_native
            if available < needed:
                raise InsufficientFunds(
                    f"{native.symbol} balance does not cover the amount and fees",
                    available=str(max(available, 0)),
                    needed=str(needed),
                )
            session.add(
                Reservation(
                    withdrawal_id=withdrawal_id,
                    wallet_id=wallet.id,
                    asset=intent.asset.symbol,
                    amount=intent.amount,
                    fee_amount=fee,
                )
            )

    async def _reserve_sweep(self, withdrawal: Withdrawal, wallet: Wallet, intent: TransferIntent) -> None:
        """Fix the sweep's amount and exact fee together, from what the account holds now: the
        amount is stored on the withdrawal and held, in the same transaction, so every later
        signature (a retry, a replacement, a re-sign after expiry) moves exactly that."""
        chain = self._chains.get(withdrawal.chain)
        quote = await chain.sweep_quote(intent)
        async with self._locks.hold("wallet", wallet.id), self._sessions() as session, session.begin():
            await advisory_lock(session, "wallet", wallet.id)
            if await session.get(Reservation, withdrawal.id) is not None:
                return
            held = await session.exec(select(Reservation).where(Reservation.wallet_id == wallet.id, Reservation.state == "HELD"))
            if held.first() is not None:
                raise PermanentError("other withdrawals from this wallet are in flight: sweep it later", wallet_id=wallet.id)
            if quote.amount <= 0:
                raise InsufficientFunds(
                    "nothing to sweep: the balance does not cover the fee", available=str(quote.amount + quote.fee), needed=str(quote.fee)
                )
            row = await session.get(Withdrawal, withdrawal.id, with_for_update=True)
            assert row is not None
            row.amount = quote.amount
            row.updated_at = utcnow()
            session.add(row)
            session.add(
                Reservation(
                    withdrawal_id=withdrawal.id,
                    wallet_id=wallet.id,
                    asset=intent.asset.symbol,
                    amount=quote.amount,
                    fee_amount=quote.fee,
                )
            )

    @activity.defn(name="sign_transfer")
    async def prepare(self, withdrawal_id: str) -> PreparedAttempt:
        """Claim a nonce and persist the signed transaction in one database transaction.

        A retry (or a reset of the workflow) returns the stored attempt; it never signs again.
        Nothing is signed while the access re-check refuses (activities/access.py).
        """
        return (await self._sign_first(withdrawal_id)).prepared

    async def _sign_first(self, withdrawal_id: str) -> _Signed:
        """sign_transfer's work, with what it loaded (the send that follows in the same step reuses it)."""
        # One transaction enters SIGNING and makes the access and policy re-check; its refusal
        # is raised once SIGNING (and the policy's re-check) are committed.
        async with self._sessions() as session, session.begin():
            withdrawal = await self._enter_step(session, withdrawal_id, WithdrawalStatus.SIGNING)
            wallet = await self._wallet_of(session, withdrawal)
            loaded = _Loaded(withdrawal, wallet, await self._attempts(session, withdrawal_id))
            refusal = await self._refusal_in(session, withdrawal, wallet, loaded.attempts, SigningStep.FIRST)
        if refusal is not None:
            raise refusal
        if loaded.attempts:  # a retry: the attempt already made (it may already be out)
            return _Signed(_prepared(loaded.attempts), loaded)
        serialized = self._slot_serialized(withdrawal_id, with_channel=True, loaded=loaded)
        async with serialized as channel, self._sessions() as session, session.begin():
            intent = await self._signing_intent(session, withdrawal, wallet)
            slot_owner = channel.address if channel is not None else intent.sender
            assert slot_owner is not None
            await advisory_lock(session, "sender", withdrawal.chain, slot_owner)
            attempts = await self._attempts(session, withdrawal_id)
            if attempts:  # signed by a concurrent try of this step meanwhile
                return _Signed(_prepared(attempts), dataclasses.replace(loaded, attempts=attempts))
            sequence = await self._claim_sequence(session, withdrawal, slot_owner)
            chain = self._chains.get(withdrawal.chain)
            sign, channel_key = self._guarded(withdrawal, wallet, intent, sequence, channel)
            signed = await chain.sign_transfer(intent, sequence, sign, channel=channel_key)
            attempt = self._attempt_row(withdrawal, intent, signed)
            session.add(attempt)
            await session.exec(sa.update(Withdrawal).where(col(Withdrawal.id) == withdrawal_id).values(nonce=sequence))
            withdrawal.nonce = sequence
            await self._audit_signed(session, withdrawal.id, signed)
        activity.logger.info("signed attempt persisted", extra={"tx_hash": signed.tx_hash, "nonce": sequence})
        return _Signed(_prepared([attempt]), dataclasses.replace(loaded, attempts=[attempt]), fresh=True)

    def _guarded(
        self,
        withdrawal: Withdrawal,
        wallet: Wallet,
        intent: TransferIntent,
        sequence: int | None,
        channel: Wallet | None = None,
        *,
        cancelling: bool = False,
    ) -> tuple[GuardedSigner, ChannelKey | None]:
        """The wallet's signer (and the channel's), each signing only the approved intent
        (activities/signing_guard.py); the stored intent's seal is checked first."""
        require_seal(self._policy.intent_seal_key, withdrawal)
        if cancelling or withdrawal.kind == GAP_FILL:
            purpose = CANCEL
        elif withdrawal.sweep:
            purpose = SWEEP
        elif withdrawal.kind == "TRUSTLINE":
            purpose = TRUSTLINE
        else:
            purpose = TRANSFER
        expected = Expectation(
            purpose=purpose,
            wallet=intent.sender,
            fee_payer=channel.address if channel is not None and channel.address else intent.sender,
            sequence=sequence,
            asset=intent.asset.contract,
            destination=intent.destination,
            amount=intent.amount,
            memo=intent.memo,
            sweep_total=intent.amount + intent.fee if intent.sweep and intent.fee is not None else None,
        )
        chain = self._chains.get(withdrawal.chain)

        async def refused(reasons: str) -> None:
            await record_withdrawal_alert(self._sessions, withdrawal.id, "POLICY_VIOLATION", reasons)

        channel_key = None
        if channel is not None:
            assert channel.address is not None
            channel_key = ChannelKey(address=channel.address, sign=GuardedSigner(self._signer_for(channel), chain, expected, refused))
        return GuardedSigner(self._signer_for(wallet), chain, expected, refused), channel_key

    async def _claim_sequence(self, session: AsyncSession, withdrawal: Withdrawal, slot_owner: str) -> int | None:
        """The next slot of `slot_owner`: the wallet, or the channel account the withdrawal leases."""
        chain = self._chains.get(withdrawal.chain)
        mine = await session.exec(select(SequenceClaim).where(SequenceClaim.withdrawal_id == withdrawal.id, SequenceClaim.state == "ACTIVE"))
        existing = mine.first()
        if existing is not None:
            return existing.sequence
        settled = await chain.settled_sequence(slot_owner)
        if settled is None:
            return None
        if chain.queues_future_sequences:
            queued = await self._next_queued_sequence(session, withdrawal, slot_owner, settled)
            return queued if queued is not None else await self._claim_fresh(session, withdrawal, slot_owner)
        sequence = await self._next_exact_sequence(session, withdrawal.chain, slot_owner, settled)
        await self._take_claim(session, withdrawal, slot_owner, sequence)
        return sequence

    async def _next_queued_sequence(self, session: AsyncSession, withdrawal: Withdrawal, slot_owner: str, settled: int) -> int | None:
        """EVM: a nonce released by a withdrawal that ended before its transaction could land is
        taken over first, or every later transaction from this sender waits behind the gap. A
        retry takes its original's own nonce when that was released: whichever of the two
        signed transactions is mined, the other never can be."""
        released = (
            select(SequenceClaim)
            .where(
                SequenceClaim.chain == withdrawal.chain,
                SequenceClaim.sender == slot_owner,
                SequenceClaim.state == "RELEASED",
                SequenceClaim.sequence >= settled,
            )
            .order_by(col(SequenceClaim.sequence))
            .limit(1)
        )
        hole: SequenceClaim | None = None
        if withdrawal.retry_of is not None:
            hole = (await session.exec(released.where(SequenceClaim.withdrawal_id == withdrawal.retry_of))).first()
        reusable = hole or (await session.exec(released)).first()
        if reusable is None:
            return None
        reusable.withdrawal_id = withdrawal.id
        reusable.state = "ACTIVE"
        reusable.updated_at = utcnow()
        session.add(reusable)
        return reusable.sequence

    async def _claim_fresh(self, session: AsyncSession, withdrawal: Withdrawal, slot_owner: str) -> int:
        highest = await session.exec(
            select(sa.func.max(col(SequenceClaim.sequence))).where(SequenceClaim.chain == withdrawal.chain, SequenceClaim.sender == slot_owner)
        )
        sequence = await self._chains.get(withdrawal.chain).next_sequence(slot_owner, highest.one())
        assert sequence is not None
        session.add(SequenceClaim(chain=withdrawal.chain, sender=slot_owner, sequence=sequence, withdrawal_id=withdrawal.id))
        return sequence

    @staticmethod
    async def _next_exact_sequence(session: AsyncSession, chain: str, slot_owner: str, settled: int) -> int:
        """Stellar: only the account's next sequence is accepted. Our in-flight claims from there
        up, without a gap, are taken; a claim above a gap (or below `settled`) can never be used
        again, e.g. after the network was reset and the account re-created: never re-sign it."""
        active = await session.exec(
            select(SequenceClaim.sequence).where(
                SequenceClaim.chain == chain,
                SequenceClaim.sender == slot_owner,
                SequenceClaim.state == "ACTIVE",
                SequenceClaim.sequence >= settled,
            )
        )
        taken = set(active.all())
        sequence = settled
        while sequence in taken:
            sequence += 1
        return sequence

    @staticmethod
    async def _take_claim(session: AsyncSession, withdrawal: Withdrawal, slot_owner: str, sequence: int) -> None:
        """Claim `sequence` for this withdrawal: a new row, or a stale one (released, or another
        withdrawal's that can never be used) taken over."""
        row = await session.get(SequenceClaim, (withdrawal.chain, slot_owner, sequence), with_for_update=True)
        if row is None:
            session.add(SequenceClaim(chain=withdrawal.chain, sender=slot_owner, sequence=sequence, withdrawal_id=withdrawal.id))
            return
        row.withdrawal_id, row.state, row.updated_at = withdrawal.id, "ACTIVE", utcnow()
        session.add(row)

    @staticmethod
    def _attempt_row(withdrawal: Withdrawal, intent: TransferIntent, signed: SignedTransfer) -> TransferAttempt:
        return TransferAttempt(
            withdrawal_id=withdrawal.id,
            chain=withdrawal.chain,
            sender=intent.sender,
            sequence=signed.sequence,
            tx_hash=signed.tx_hash,
            raw_tx=signed.raw_tx,
            fee_params=signed.fee_params,
            max_fee=signed.max_fee,
            purpose=signed.purpose,
        )

    @activity.defn(name="bump_fee")
    async def bump(self, bump: BumpInput) -> PreparedAttempt:
        """Sign a replacement in the same slot with higher fees, once per replaced attempt.
        A replacement the fee cap does not allow comes back `blocked` instead of failing: a
        transient FeeAboveCap retried inside this step would stop the workflow from reading
        receipts (the attempt may well be mined) and from acting on a cancellation."""
        held_back = await self._held_back(bump.withdrawal_id, SigningStep.BUMP)
        if held_back is not None:
            return held_back
        async with self._slot_serialized(bump.withdrawal_id), self._sessions() as session, session.begin():
            withdrawal, wallet = await self._load(session, bump.withdrawal_id)
            intent = await self._signing_intent(session, withdrawal, wallet)
            await advisory_lock(session, "sender", withdrawal.chain, intent.sender)
            attempts = await self._attempts(session, withdrawal.id)
            if not attempts:
                raise PermanentError("nothing to replace: no signed attempt", withdrawal_id=withdrawal.id)
            latest = attempts[-1]
            chain = self._chains.get(withdrawal.chain)
            if latest.tx_hash != bump.replaces_tx_hash or not chain.replaceable_in_slot:
                # Already bumped by an earlier try; or a chain where the same bytes are simply
                # sent again (the caller re-broadcasts the latest attempt next).
                return _prepared(attempts)
            cancelling = latest.purpose == "CANCEL"
            sign, _ = self._guarded(withdrawal, wallet, intent, latest.sequence, cancelling=cancelling)
            if cancelling:
                intent = self._cancel_intent(chain, intent)  # keep cancelling, never revive the transfer
            try:
                signed = await chain.sign_transfer(intent, latest.sequence, sign, replacing=as_signed(latest))
            except FeeAboveCap as e:
                return _prepared(attempts, blocked=e)
            if latest.purpose == "CANCEL":
                signed = dataclasses.replace(signed, purpose="CANCEL")
            elif withdrawal.sweep and "value" in signed.fee_params:
                # A replaced sweep pays more fee out of the same total: it moves that much less.
                await self._resize_sweep(session, withdrawal, int(signed.fee_params["value"]), signed.max_fee)
            await self._grow_fee_hold(session, withdrawal, signed.max_fee)
            replacement = self._attempt_row(withdrawal, intent, signed)
            session.add(replacement)
            await self._audit_signed(session, withdrawal.id, signed, replaces=latest.tx_hash)
            activity.logger.info(
                "fee-bumped replacement persisted",
                extra={"tx_hash": signed.tx_hash, "replaces": latest.tx_hash, "nonce": latest.sequence},
            )
            return _prepared([*attempts, replacement])

    @staticmethod
    async def _audit_signed(session: AsyncSession, withdrawal_id: str, signed: SignedTransfer, replaces: str | None = None) -> None:
        details = {"tx_hash": signed.tx_hash, "slot": signed.sequence, "purpose": signed.purpose, "max_fee": str(signed.max_fee)}
        await audit.append(
            session,
            actor=SIGNER_ACTOR,
            action="withdrawal.signed",
            object_type="withdrawal",
            object_id=withdrawal_id,
            details=details | ({"replaces": replaces} if replaces else {}),
        )

    @staticmethod
    async def _grow_fee_hold(session: AsyncSession, withdrawal: Withdrawal, max_fee: int) -> None:
        """A replacement can cost more than the fee held at reserve time: hold the most any
        attempt can cost, so other withdrawals never count on that money."""
        reservation = await session.get(Reservation, withdrawal.id, with_for_update=True)
        if reservation is not None and reservation.state == "HELD" and max_fee > reservation.fee_amount:
            reservation.fee_amount, reservation.updated_at = max_fee, utcnow()
            session.add(reservation)

    @staticmethod
    async def _resize_sweep(session: AsyncSession, withdrawal: Withdrawal, amount: int, fee: int) -> None:
        withdrawal.amount = amount
        withdrawal.updated_at = utcnow()
        session.add(withdrawal)
        reservation = await session.get(Reservation, withdrawal.id, with_for_update=True)
        if reservation is not None:
            reservation.amount, reservation.fee_amount, reservation.updated_at = amount, fee, utcnow()
            session.add(reservation)

    @staticmethod
    def _cancel_intent(chain: Chain, intent: TransferIntent) -> TransferIntent:
        native = chain.asset(chain.settings.native_symbol)
        return TransferIntent(sender=intent.sender, destination=intent.sender, asset=native, amount=0)

    @activity.defn(name="cancel_by_replacement")
    async def cancel_by_replacement(self, cancel: BumpInput) -> PreparedAttempt:
        """Replace the broadcast transfer with a 0-value self-send in the same nonce and higher
        fees; whichever lands decides the outcome (receipt: CANCELLED or COMPLETED)."""
        held_back = await self._held_back(cancel.withdrawal_id, SigningStep.CANCEL)
        if held_back is not None:
            return held_back
        async with self._slot_serialized(cancel.withdrawal_id), self._sessions() as session, session.begin():
            withdrawal, wallet = await self._load(session, cancel.withdrawal_id)
            intent = self._intent(withdrawal, wallet)
            await advisory_lock(session, "sender", withdrawal.chain, intent.sender)
            attempts = await self._attempts(session, withdrawal.id)
            chain = self._chains.get(withdrawal.chain)
            if not chain.replaceable_in_slot:
                raise PermanentError("this chain cannot replace a sent transaction", chain=withdrawal.chain)
            if not attempts or any(a.purpose == "CANCEL" for a in attempts) or attempts[-1].tx_hash != cancel.replaces_tx_hash:
                return _prepared(attempts)  # already cancelled (or superseded) by an earlier try
            latest = attempts[-1]
            sign, _ = self._guarded(withdrawal, wallet, intent, latest.sequence, cancelling=True)
            try:
                signed = await chain.sign_transfer(self._cancel_intent(chain, intent), latest.sequence, sign, replacing=as_signed(latest))
            except FeeAboveCap as e:
                return _prepared(attempts, blocked=e)
            await self._grow_fee_hold(session, withdrawal, signed.max_fee)
            replacement = self._attempt_row(withdrawal, intent, dataclasses.replace(signed, purpose="CANCEL"))
            session.add(replacement)
            await self._audit_signed(session, withdrawal.id, dataclasses.replace(signed, purpose="CANCEL"), replaces=latest.tx_hash)
            activity.logger.info(
                "cancellation replacement persisted",
                extra={"tx_hash": signed.tx_hash, "replaces": latest.tx_hash, "nonce": latest.sequence},
            )
            return _prepared([*attempts, replacement])

    @activity.defn(name="resign_expired_transfer")
    async def resign_expired(self, resign: ResignInput) -> PreparedAttempt:
        """Sign anew in a fresh slot, only once the chain proves the latest attempt is dead."""
        held_back = await self._held_back(resign.withdrawal_id, SigningStep.RESIGN)
        if held_back is not None:
            return held_back
        try:
            return await self._resign(resign)
        except _Blocked as blocked:  # rolled back: the dead attempt's claim stays as it was
            async with self._sessions() as session:
                return _prepared(await self._attempts(session, resign.withdrawal_id), blocked=blocked.cause)

    async def _resign(self, resign: ResignInput) -> PreparedAttempt:
        serialized = self._slot_serialized(resign.withdrawal_id, with_channel=True, new_slot=True)
        async with serialized as channel, self._sessions() as session, session.begin():
            withdrawal, wallet = await self._load(session, resign.withdrawal_id)
            intent = await self._signing_intent(session, withdrawal, wallet)
            slot_owner = channel.address if channel is not None else intent.sender
            assert slot_owner is not None
            await advisory_lock(session, "sender", withdrawal.chain, slot_owner)
            attempts = await self._attempts(session, withdrawal.id)
            if not attempts or attempts[-1].tx_hash != resign.expired_tx_hash:
                return _prepared(attempts)  # re-signed already by an earlier try
            chain = self._chains.get(withdrawal.chain)
            status = await chain.transfer_status(intent, [as_signed(a) for a in attempts])
            if status.state != OnChainState.EXPIRED:
                return _prepared(attempts)  # not provably dead: never sign a second transfer
            # The dead attempt never consumed its slot: hand it back, then claim one afresh from
            # what the chain says now (on Stellar usually the very same sequence number, with
            # new timebounds; after a network reset, the account's new sequence).
            await session.exec(
                sa.update(SequenceClaim)
                .where(col(SequenceClaim.withdrawal_id) == withdrawal.id, col(SequenceClaim.state) == "ACTIVE")
                .values(state="RELEASED", updated_at=utcnow())
            )
            await session.flush()
            sequence = await self._claim_sequence(session, withdrawal, slot_owner)
            sign, channel_key = self._guarded(withdrawal, wallet, intent, sequence, channel)
            try:
                signed = await chain.sign_transfer(intent, sequence, sign, channel=channel_key)
            except FeeAboveCap as e:
                raise _Blocked(e) from e
            attempt = self._attempt_row(withdrawal, intent, signed)
            session.add(attempt)
            withdrawal.nonce = sequence
            session.add(withdrawal)
            await self._audit_signed(session, withdrawal.id, signed, replaces=resign.expired_tx_hash)
            activity.logger.info(
                "expired attempt re-signed",
                extra={"tx_hash": signed.tx_hash, "expired": resign.expired_tx_hash, "nonce": sequence},
            )
            return _prepared([*attempts, attempt])

    @activity.defn(name="broadcast_transfer")
    async def broadcast(self, withdrawal_id: str) -> PreparedAttempt:
        """Send the latest stored bytes. Safe to repeat: the same bytes are the same transfer.
        The withdrawal is BROADCASTING while it sends and CONFIRMING once it is out."""
        loaded = await self._enter_sending(withdrawal_id)
        assert loaded is not None
        return await self._send(loaded)

    @activity.defn(name="sign_and_broadcast_transfer")
    async def sign_and_broadcast(self, withdrawal_id: str) -> SentAttempt:
        """sign_transfer then broadcast_transfer in one activity (issue 14: an activity and a
        workflow task fewer per withdrawal, and no round trip through the server between the
        signature and the send). The signed bytes are committed before they are sent, as with
        two activities: a retry finds them and sends the same bytes again, never a second
        signature. A hold or cancellation recorded through the API while it signed (a pause
        during a slow KMS call) stops it before the send; the workflow then holds or cancels at
        its checkpoint and sends with broadcast_transfer only once resumed."""
        step_started = time.monotonic()
        signed = await self._sign_first(withdrawal_id)
        crash_point("sign_transfer")
        if await self._enter_sending(withdrawal_id, signed=signed.loaded, stop_if_requested=signed.fresh) is None:
            activity.logger.info("signed, not sent: a hold or cancellation was recorded meanwhile", extra={"tx_hash": signed.prepared.tx_hash})
            return SentAttempt(signed.prepared, sent=False)
        out = await self._send(signed.loaded)
        crash_point("broadcast_transfer")
        timeout = activity.info().start_to_close_timeout
        left = timeout.total_seconds() - (time.monotonic() - step_started) if timeout else float("inf")
        return SentAttempt(out, sent=True, outcome=await self._final_soon_after_sending(signed.loaded, left))

    async def _final_soon_after_sending(self, sent: _Loaded, seconds_left_in_step: float) -> ConfirmationResult | None:
        """The transfer's final outcome if the chain gives it within its finality wait after the
        send (see `finality_wait_after_send`), else None. Where blocks are final that fast (one
        block deep on a fast chain, a Stellar ledger) the withdrawal concludes without a
        confirmation activity and the workflow task around it (issue 14); elsewhere
        await_confirmation takes over from where this stopped. Read-only: the same look at the
        chain as await_confirmation's, so the same finality rules decide."""
        chain = self._chains.get(sent.withdrawal.chain)
        settings = chain.settings
        wait = finality_wait_after_send(settings, seconds_left_in_step)
        if wait <= 0:
            return None
        intent = self._intent(sent.withdrawal, sent.wallet)
        attempts = [as_signed(a) for a in sent.attempts]
        deadline = time.monotonic() + wait
        while True:
            try:
                status = await chain.transfer_status(intent, attempts)
            except CustodyError as e:
                # The send is done and recorded: a failed look must not fail the step (its retry
                # would send the bytes again for nothing). The confirmation loop looks again.
                activity.logger.warning("finality look after the send failed", extra={"error_code": e.code})
                return None
            if status.state == OnChainState.EXPIRED:
                return None  # the confirmation loop's to handle: a re-sign, or a cancellation's end
            if status.state != OnChainState.PENDING:
                return _confirmation(status, attempts)
            if time.monotonic() + settings.poll_interval_seconds > deadline:
                return None
            await asyncio.sleep(settings.poll_interval_seconds)

    async def _enter_sending(self, withdrawal_id: str, *, signed: _Loaded | None = None, stop_if_requested: bool = False) -> _Loaded | None:
        """BROADCASTING, with what the send needs (`signed`: what the same step just signed or
        found signed). `stop_if_requested`: the attempt was signed by this very try, so a hold or
        cancellation recorded meanwhile stops the step before the send (None). Never for an
        attempt found signed: an earlier try may have sent it and died before reporting, and a
        cancellation read as "nothing went out" would report CANCELLED for money that moved;
        the same bytes are sent again and a cancellation is answered after the send, on chain."""
        async with self._sessions() as session, session.begin():
            if stop_if_requested and await stop_requested(session, withdrawal_id):
                return None
            withdrawal = await self._enter_step(session, withdrawal_id, WithdrawalStatus.BROADCASTING)
            if signed is not None:
                return signed
            return _Loaded(withdrawal, await self._wallet_of(session, withdrawal), await self._attempts(session, withdrawal_id))

    async def _send(self, loaded: _Loaded) -> PreparedAttempt:
        """Send the latest attempt; then, in one transaction, mark its first send and enter CONFIRMING."""
        withdrawal_id = loaded.withdrawal.id
        prepared, result = await self._send_latest(loaded)
        latest = loaded.attempts[-1]
        async with self._sessions() as session, session.begin():
            if result is not None:
                first_send = await session.exec(
                    sa.update(TransferAttempt)
                    .where(col(TransferAttempt.id) == latest.id, col(TransferAttempt.broadcast_at).is_(None))
                    .values(state="BROADCAST", broadcast_at=utcnow())
                )
                if first_send.rowcount:
                    await audit.append(
                        session,
                        actor=WORKFLOW_ACTOR,
                        action="withdrawal.broadcast",
                        object_type="withdrawal",
                        object_id=withdrawal_id,
                        details={"tx_hash": latest.tx_hash, "result": result},
                    )
            await self._enter_step(session, withdrawal_id, WithdrawalStatus.CONFIRMING)
        if result is not None:
            activity.logger.info("broadcast", extra={"tx_hash": latest.tx_hash, "result": result})
        return prepared

    async def _send_latest(self, loaded: _Loaded) -> tuple[PreparedAttempt, str | None]:
        """The latest attempt sent, with the node's answer; None when the send was refused in a
        way that leaves the confirm loop to decide."""
        withdrawal, attempts = loaded.withdrawal, loaded.attempts
        if not attempts:
            raise PermanentError("no signed attempt to broadcast", withdrawal_id=withdrawal.id)
        chain = self._chains.get(withdrawal.chain)
        latest = attempts[-1]
        try:
            result = await chain.broadcast(as_signed(latest))
        except FeeTooLow:
            if chain.replaceable_in_slot:
                raise
            # Refused, nothing consumed, and the bytes stay valid until they expire: the confirm
            # loop re-sends them until the fee surge passes, or, once they are provably dead,
            # re-signs with the fee of that moment (resign_expired). Never a FAILED withdrawal.
            activity.logger.warning("fee refused by the network: re-sending until it passes or expires", extra={"tx_hash": latest.tx_hash})
            metrics.BROADCASTS.labels(chain=withdrawal.chain, result="fee_too_low").inc()
            return _prepared(attempts), None
        except PermanentError:
            if not chain.replaceable_in_slot and (latest.broadcast_at is not None or activity.info().attempt > 1):
                # Bytes a node once accepted (or that a lost response may have delivered) can
                # still land until they expire: a refused re-send proves nothing, so let
                # transfer_status decide (EXPIRED leads to a fresh attempt, not a failure).
                return _prepared(attempts), None
            # If any attempt of ours is already out there (an earlier send whose response was
            # lost, or the original of a refused replacement) it may still land: keep
            # confirming rather than declaring the withdrawal failed.
            for attempt in reversed(attempts):
                if await chain.is_known(attempt.tx_hash):
                    activity.logger.warning("send refused but an attempt is pending", extra={"tx_hash": attempt.tx_hash})
                    metrics.BROADCASTS.labels(chain=withdrawal.chain, result="refused_but_pending").inc()
                    return _prepared(attempts), None
            raise
        metrics.BROADCASTS.labels(chain=withdrawal.chain, result=result).inc()
        return _prepared(attempts), result

    @activity.defn(name="await_confirmation")
    async def await_confirmation(self, withdrawal_id: str) -> ConfirmationResult:
        """Poll until the transfer is final, or return PENDING after the chain's bump delay
        (a transfer already in a block: near the round's timeout, nothing being left to bump).
        An unmined attempt the node no longer knows (evicted, or its block reorged away) is sent
        again as the same bytes: it is the same transfer and can land only once."""
        async with self._sessions() as session:
            withdrawal, wallet = await self._load(session, withdrawal_id)
        chain = self._chains.get(withdrawal.chain)
        chain_settings = chain.settings
        intent = self._intent(withdrawal, wallet)
        started = time.monotonic()
        bump_deadline = started + chain_settings.fee_bump_after_seconds
        timeout = activity.info().start_to_close_timeout
        round_deadline = started + timeout.total_seconds() - CONFIRMATION_MARGIN_SECONDS if timeout else bump_deadline
        while True:
            async with self._sessions() as session:
                attempts = [as_signed(a) for a in await self._attempts(session, withdrawal_id)]
            status = await chain.transfer_status(intent, attempts)
            activity.heartbeat(status.state.value)
            if status.state != OnChainState.PENDING:
                return _confirmation(status, attempts)
            # In a block and only awaiting finality, nothing is bumped or sent again: this round
            # waits on (issue 14: one activity, not one per bump delay, e.g. Solana's 2 s against
            # 13 s to `finalized`). Out of its block again (a reorg), the bump delay counts.
            in_block = status.block_number is not None
            if time.monotonic() >= (max(bump_deadline, round_deadline) if in_block else bump_deadline):
                return _confirmation(status, attempts)
            if status.block_number is None and attempts and chain.mempool_visible:
                await self._resend_if_dropped(chain, withdrawal, attempts[-1])
            await asyncio.sleep(chain_settings.poll_interval_seconds)

    @staticmethod
    async def _resend_if_dropped(chain: Chain, withdrawal: Withdrawal, latest: SignedTransfer) -> None:
        if await chain.is_known(latest.tx_hash):
            return
        try:
            result = await chain.broadcast(latest)
        except CustodyError as e:  # the confirm loop goes on; the next round decides
            activity.logger.warning("re-sending a dropped attempt failed", extra={"tx_hash": latest.tx_hash, "error_code": e.code})
            return
        metrics.BROADCASTS.labels(chain=withdrawal.chain, result=f"resent_{result}").inc()
        activity.logger.warning("attempt was dropped by the node: sent again as is", extra={"tx_hash": latest.tx_hash, "result": result})

    @activity.defn(name="finish_withdrawal")
    async def finish(self, finish: FinishInput) -> None:
        """The terminal transition, atomically: status, history, reservation, nonce claim."""
        outcome = finish.outcome
        landed = outcome is not None and outcome.state in LANDED_OUTCOMES
        release_slot = False
        if not landed:
            # A nonce goes back to the pool only if no attempt of ours can still land with it
            # (asked of the node before the transaction below: no row stays locked meanwhile).
            async with self._sessions() as session:
                withdrawal, _ = await self._load(session, finish.withdrawal_id)
                attempts = await self._attempts(session, finish.withdrawal_id)
            chain = self._chains.get(withdrawal.chain)
            release_slot = not any([await chain.is_known(a.tx_hash) for a in attempts])

        async with self._sessions() as session, session.begin():
            row = await session.get(Withdrawal, finish.withdrawal_id, with_for_update=True)
            if row is None:
                raise WithdrawalNotFound("no such withdrawal", withdrawal_id=finish.withdrawal_id)
            if WithdrawalStatus(row.status).is_final:
                return
            now = utcnow()
            row.paused, row.paused_by, row.paused_reason = False, None, None  # nothing left to hold
            row.error_code = finish.error_code
            row.error_message = finish.error_message
            row.completed_at = now
            if outcome is not None:
                # Only a transaction of ours that is on chain is the withdrawal's tx_hash (an
                # expired attempt is not); the workflow's result says the same.
                row.tx_hash = (outcome.tx_hash or row.tx_hash) if landed else None
                row.block_number = outcome.block_number
                row.fee_paid = outcome.fee_paid
            await _settle_attempt_states(session, row.id, outcome if landed else None)
            if row.sweep and outcome is not None:
                # Each replacement of a sweep moves a little less (it pays more fee out of the
                # same total): what was swept is the value of the attempt that landed.
                landed_attempt = next((a for a in await self._attempts(session, row.id) if a.tx_hash == outcome.tx_hash), None)
                if landed_attempt is not None and "value" in (landed_attempt.fee_params or {}):
                    row.amount = int(landed_attempt.fee_params["value"])
            detail = {k: v for k, v in {"error_code": finish.error_code, "tx_hash": row.tx_hash}.items() if v}
            fee_paid = {"fee_paid": str(row.fee_paid)} if row.fee_paid is not None else {}
            await _record_transition(session, row, finish.status, detail, at=now, audit_details=detail | fee_paid)
            if finish.status != WithdrawalStatus.COMPLETED:
                await policy_store.release_spend(session, row.id)  # paid nothing: frees its share of rolling windows
            reservation = await session.get(Reservation, row.id, with_for_update=True)
            if reservation is not None and reservation.state == "HELD":
                reservation.state = "SETTLED" if finish.status == WithdrawalStatus.COMPLETED else "RELEASED"
                if row.sweep and finish.status == WithdrawalStatus.COMPLETED:
                    reservation.amount = row.amount
                reservation.updated_at = now
                session.add(reservation)
            await ChannelLeases.release(session, row.id)
            if release_slot:
                await session.exec(
                    sa.update(SequenceClaim)
                    .where(col(SequenceClaim.withdrawal_id) == row.id, col(SequenceClaim.state) == "ACTIVE")
                    .values(state="RELEASED", updated_at=now)
                )
        metrics.WITHDRAWALS_FINISHED.labels(chain=row.chain, asset=row.asset, status=finish.status.value).inc()
        activity.logger.info("withdrawal finished", extra={"status": finish.status.value, "error_code": finish.error_code})
