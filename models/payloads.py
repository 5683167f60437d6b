"""Workflow and activity payloads: plain dataclasses, nothing heavy imported.

Temporal history stores these, so they carry ids and statuses, not addresses, amounts or key
material; activities load the rest from PostgreSQL by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class WithdrawalStatus(str, Enum):
    PENDING = "PENDING"
    VALIDATING = "VALIDATING"
    AWAITING_APPROVAL = "AWAITING_APPROVAL"
    SIGNING = "SIGNING"
    BROADCASTING = "BROADCASTING"
    CONFIRMING = "CONFIRMING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({WithdrawalStatus.COMPLETED, WithdrawalStatus.FAILED, WithdrawalStatus.CANCELLED})


class OnChainState(str, Enum):
    PENDING = "PENDING"  # not yet final: unmined, or mined but not deep/finalized enough
    CONFIRMED = "CONFIRMED"  # final and the transfer happened
    REVERTED = "REVERTED"  # final, slot and fee consumed, transfer did not happen
    SLOT_LOST = "SLOT_LOST"  # our slot was consumed by a transaction that is none of ours
    # Provably dead and never applied (Solana blockhash / Stellar timebounds passed without our
    # hash on chain): the transfer did not happen and may be signed anew in a new slot.
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"  # our cancellation (EVM: 0-value self-send in the same nonce) won the slot


@dataclass
class WithdrawalInput:
    withdrawal_id: str
    chain: str
    # Set when a run continues as new while it waits on chain: what the new run picks up.
    resume: ConfirmingState | None = None


@dataclass
class WithdrawalResult:
    withdrawal_id: str
    status: WithdrawalStatus
    tx_hash: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class ValidationResult:
    requested_by: str
    needs_approval: bool = False
    approval_timeout_seconds: int = 86_400
    cancellable_after_broadcast: bool = False
    # A slot left open below this withdrawal's stalls it (EVM nonces): fill such gaps while waiting.
    fills_sequence_gaps: bool = False
    # Confirmation rounds one run makes before it continues as new (bounded history); 0: never.
    rounds_per_run: int = 0
    # The policy's decision, when validate_and_decide_withdrawal judged it in the same step.
    verdict: PolicyVerdict | None = None


@dataclass
class OperatorRequest:
    """pause / resume / cancel / approve, with who asked and why (shown in history and the UI)."""

    by: str
    reason: str = ""


@dataclass
class ControlEvent:
    withdrawal_id: str
    event: str  # PAUSED | RESUMED | CANCEL_REQUESTED | APPROVED
    by: str
    reason: str = ""


@dataclass
class WithdrawalState:
    withdrawal_id: str
    status: WithdrawalStatus
    tx_hash: str | None = None
    error_code: str | None = None
    paused: bool = False
    paused_by: str | None = None
    paused_reason: str | None = None
    cancel_requested_by: str | None = None
    approved_by: str | None = None
    alerts: list[str] = field(default_factory=list)  # "CODE: message", as recorded


@dataclass
class ConfirmingState:
    """A withdrawal waiting on chain, carried across continue-as-new."""

    validation: ValidationResult
    tx_hash: str | None
    attempt_count: int
    cancel: OperatorRequest | None = None
    cancel_sent: bool = False
    paused: OperatorRequest | None = None
    approved: OperatorRequest | None = None
    replacing: bool = True
    alerts: list[str] = field(default_factory=list)
    run_number: int = 1


@dataclass
class AlertEvent:
    """Something an operator must look at; the withdrawal goes on (recorded, counted, logged)."""

    withdrawal_id: str
    code: str  # STUCK_AT_FEE_CAP | REPLACEMENT_FAILED | BROADCAST_REFUSED | CONFIRMATION_ERROR ...
    message: str = ""


@dataclass
class GapFill:
    """Nonces below a stalled withdrawal's that no transaction of ours uses, and the GAP_FILL
    withdrawals (started as children `withdrawal-<id>`) that use them up."""

    gaps: list[int] = field(default_factory=list)
    fillers: list[str] = field(default_factory=list)


@dataclass
class StatusChange:
    withdrawal_id: str
    status: WithdrawalStatus
    error_code: str | None = None
    error_message: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


@dataclass
class PreparedAttempt:
    """The latest signed attempt of a withdrawal, as persisted before broadcast."""

    tx_hash: str
    sequence: int | None
    attempt_count: int
    # Set when a replacement (fee bump, cancellation, re-sign) could not be made now, with the
    # alert code saying why (e.g. STUCK_AT_FEE_CAP): the attempts already out stay as they are.
    blocked: str | None = None
    blocked_reason: str = ""


@dataclass
class SentAttempt:
    """What sign_and_broadcast_transfer did: the first attempt it signed (or found stored), and
    whether it sent it. Not sent: a hold or a cancellation was recorded through the API while it
    was signed, and the workflow holds or cancels before anything goes out."""

    attempt: PreparedAttempt
    sent: bool
    # The chain's final word on it when it came within the chain's finality wait after the send
    # (an outcome the confirmation loop would have returned at once: landed, reverted, slot
    # lost); None: still pending, and the workflow confirms with await_confirmation.
    outcome: ConfirmationResult | None = None


@dataclass
class ConfirmationCheck:
    withdrawal_id: str
    # Return PENDING after this long without a final outcome, so the workflow can bump fees.
    give_up_after_seconds: float


@dataclass
class ConfirmationResult:
    state: OnChainState
    tx_hash: str | None = None
    block_number: int | None = None
    fee_paid: int | None = None
    detail: str = ""


@dataclass
class SettleInput:
    withdrawal_id: str
    outcome: ConfirmationResult


@dataclass
class WalletCreationInput:
    wallet_id: str


@dataclass
class WalletCreationResult:
    wallet_id: str
    status: str
    address: str | None = None
    error_code: str | None = None


@dataclass
class CreatedKey:
    key_ref: str
    public_key_hex: str


# --- key pools ---------------------------------------------------------------------------------
@dataclass
class RebalanceInput:
    chain: str


@dataclass
class PoolTransfer:
    """A pool movement persisted as a withdrawal row, run as child `withdrawal-<id>`."""

    withdrawal_id: str
    asset: str
    # False for HODL movements waiting for an operator: the run starts them and goes on.
    wait: bool = True


@dataclass
class PoolWalletRef:
    """A pool key whose wallet is still CREATING. `via_child`: the default signer backend, so the
    ordinary WalletCreationWorkflow makes it; otherwise (a separate HODL backend) pool activities."""

    wallet_id: str
    via_child: bool = True


@dataclass
class PoolPlan:
    wallets: list[PoolWalletRef] = field(default_factory=list)
    transfers: list[PoolTransfer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class PoolStepInput:
    chain: str
    run_key: str  # the rebalance run's workflow id: every idempotency key derives from it
    run_id: str = ""


@dataclass
class RebalanceResult:
    chain: str
    run_key: str
    status: str = "RUNNING"  # COMPLETED | FAILED
    recovered: int = 0
    banks_funded: int = 0
    explorers_created: int = 0
    pending_approvals: list[str] = field(default_factory=list)  # HODL withdrawals awaiting an operator
    notes: list[str] = field(default_factory=list)
    error_code: str | None = None
    error_message: str | None = None


@dataclass
class LeaseRequest:
    chain: str
    leased_by: str
    # Idempotency: a retried lease with the same id returns the same key (None: a new lease).
    lease_id: str | None = None


@dataclass
class LeaseReturn:
    chain: str
    lease_id: str
    by: str


@dataclass
class ExplorerLease:
    lease_id: str
    chain: str
    wallet_id: str  # the explorer's wallet (its address is read from the wallet, not carried here)
    state: str
    leased_by: str
    expires_at: str  # ISO 8601


@dataclass
class ChannelPlan:
    """One step of ChannelAccountsWorkflow: wallets to create (child `wallet-<id>`), channels
    friendbot creates (`faucet`), and funding withdrawals from the funding wallet (child
    `withdrawal-<id>`)."""

    wallets: list[str] = field(default_factory=list)
    faucet: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class ChannelSetResult:
    chain: str
    ready: int = 0
    underfunded: int = 0
    pending: int = 0  # CREATING or FUNDING
    failed: int = 0
    notes: list[str] = field(default_factory=list)


# --- reconciliation ----------------------------------------------------------------------------
@dataclass
class ReconciliationInput:
    chain: str


@dataclass
class ReconciliationStep:
    chain: str
    run_key: str  # the run's workflow id: its report row is keyed by it


@dataclass
class DiscoveryResult:
    chain: str
    deposits: int = 0  # transfers into our accounts newly found on chain
    unexplained: int = 0  # spends from our keys newly found that are none of our attempts


@dataclass
class VerificationResult:
    chain: str
    checked: int = 0
    final: int = 0  # now beyond reorg reach: not checked again
    vanished: list[str] = field(default_factory=list)  # COMPLETED withdrawals missing or failed on chain


@dataclass
class ReconciliationResult:
    chain: str
    run_key: str
    report_id: str
    status: str  # OK | MISMATCH
    rows: int = 0
    drifting: int = 0
    in_flight: int = 0
    vanished: list[str] = field(default_factory=list)
    unexplained: int = 0


# --- policy ------------------------------------------------------------------------------------
@dataclass
class PolicyVerdict:
    """The policy's decision on a withdrawal (activities/policy.py), before funds are held.
    BLOCK and LIMIT_EXCEEDED carry `error_code` (POLICY_BLOCKED, LIMIT_EXCEEDED): the withdrawal
    fails with it; REQUIRE_APPROVAL waits for `approvals_required` distinct approvers."""

    outcome: str  # ALLOW | REQUIRE_APPROVAL | BLOCK | LIMIT_EXCEEDED | EXEMPT
    policy_version: int
    rule_id: str
    rule_name: str = ""
    reason: str = ""
    error_code: str | None = None
    approvals_required: int = 0
    approver_role: str | None = None
    approver_group: str | None = None
    approvers: list[str] = field(default_factory=list)  # the group's members (empty: anyone with the role)


@dataclass
class PolicyState:
    """WithdrawalWorkflow's `policy` query: its decision (None before it, or for runs started
    before the policy engine) and who approved so far."""

    verdict: PolicyVerdict | None = None
    approvals: list[str] = field(default_factory=list)


# --- webhooks ----------------------------------------------------------------------------------
@dataclass
class WebhookDispatcherInput:
    # Rounds (one outbox claim each, plus the workflow starts it calls for) before the dispatcher
    # continues as new, keeping its history bounded.
    rounds_per_run: int = 100


@dataclass
class WebhookClaimResult:
    events: int = 0  # outbox rows turned into deliveries in this round
    deliveries: int = 0  # deliveries those rows made (one per subscribed endpoint)
    unstarted: int = 0  # deliveries (these, earlier ones, redeliveries) whose workflow is not started yet


@dataclass
class WebhookStartResult:
    started: int = 0
    already_started: int = 0  # a workflow of that id exists: an earlier round started it


@dataclass
class WebhookDeliveryPlan:
    delivery_id: str
    state: str  # PENDING | DELIVERED | FAILED
    attempts: int  # made so far (by an earlier run of this delivery's workflow, after a reset)
    deadline: float  # Unix seconds: no attempt begins after it; the delivery is then FAILED
    first_retry_seconds: float
    max_retry_interval_seconds: float
    request_timeout_seconds: float


@dataclass
class WebhookAttemptInput:
    delivery_id: str
    number: int


@dataclass
class WebhookAttemptResult:
    number: int
    delivered: bool
    final: bool = False  # nothing more to try: delivered, or FAILED (its endpoint was deleted)
    status_code: int | None = None
    retry_after_seconds: float | None = None  # the receiver's Retry-After (429, 503)


@dataclass
class WebhookDeliveryResult:
    delivery_id: str
    state: str
    attempts: int


# Outcomes in which one of the withdrawal's own transactions is on chain (the transfer, a
# reverted transfer, or our cancellation): its hash is the withdrawal's `tx_hash`. In every
# other outcome nothing of ours landed and the withdrawal has no `tx_hash`.
LANDED_OUTCOMES = frozenset({OnChainState.CONFIRMED, OnChainState.REVERTED, OnChainState.CANCELLED})
