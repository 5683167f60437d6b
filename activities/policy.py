"""The policy engine at work: each withdrawal is judged by the stored policy (core/policy_engine.py)
in an activity, against the database, before its funds are held (DECIDE), and judged again right
before its first signature (RECHECK). Both are recorded (policy_decisions; the withdrawal's own
rule, version and outcome columns) and audited, in the transaction that decides.

Rolling windows hold exactly: a DECIDE holds still every withdrawal its windows add up (an
in-process lock, then PostgreSQL advisory locks across workers: `decision_locks`, exclusive at
the widest window of the policy, shared above) and writes the withdrawal's spend before the locks
are released, so concurrent withdrawals each see all the others that count in the same window
and a limit is never exceeded, while decisions no window connects run at once. A withdrawal that
ends having paid nothing gives its spend back (finish_withdrawal).

Custody's own housekeeping (gap fills, trustlines, sweeps of its pool keys) is EXEMPT: it moves
no one's money out. Settings add two rules after the stored ones: `CUSTODY_APPROVAL_THRESHOLDS`
(an approver above the threshold, counting what the wallet sent without approval in the last
`approval_threshold_window_seconds`) and the key pools' HODL approval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity

from activities.access import ApprovalQuorum
from activities.locks import KeyedLocks, advisory_locks
from chains.registry import ChainRegistry
from core import metrics
from core.errors import CustodyError, LimitExceeded, PolicyBlocked, WalletNotFound, WithdrawalNotFound
from core.identity import Role
from core.money import to_base_units, to_decimal_string
from core.policy import AmountRange, Counted, Match, Per, PolicyDocument, Quorum, Rule
from core.policy_engine import WINDOW_WIDTH, Candidate, Judge, Judgement, Outcome, Step, Totals, Window
from core.settings import Settings
from db import audit
from db import policy as store
from db.engine import SessionFactory
from models.access import User
from models.db import Wallet, Withdrawal, utcnow
from models.payloads import PolicyVerdict
from models.policy import PolicyDecision, PolicySpend
from models.pools import PoolKey, PoolTier

POLICY_ACTOR = "system:policy"
DECIDE, RECHECK = "DECIDE", "RECHECK"
# Kinds that move no one's money out: a 0-value self-send filling a nonce gap, a trustline.
HOUSEKEEPING_KINDS = ("GAP_FILL", "TRUSTLINE")


@dataclass(frozen=True)
class PolicySettings:
    """What settings add to the stored policy (see the module docstring)."""

    approval_thresholds: dict[tuple[str, str], int] = field(default_factory=dict)
    approval_threshold_window_seconds: int = 86_400
    hodl_auto_approve: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicySettings:
        """Thresholds `{"anvil:ETH": "5"}` and the pools' `hodl_auto_approve_up_to`, in base units."""
        from activities.pools import units  # the pools' own reading of their settings

        thresholds: dict[tuple[str, str], int] = {}
        for key, amount in settings.approval_thresholds.items():
            chain, _, asset = key.partition(":")
            thresholds[(chain.lower(), asset)] = to_base_units(amount, settings.chain(chain).asset(asset).decimals)
        hodl = {
            chain.lower(): units(pool.hodl_auto_approve_up_to, settings.chain(chain).native_decimals)
            for chain, pool in settings.pools.items()
            if chain.lower() in settings.chains
        }
        return cls(thresholds, settings.approval_threshold_window_seconds, hodl)


@dataclass
class Recheck:
    """The re-check before a first signature: a refusal (POLICY_BLOCKED, LIMIT_EXCEEDED), or
    the approvals the current policy wants recorded (None: none)."""

    refusal: CustodyError | None = None
    quorum: ApprovalQuorum | None = None


class PolicyJudge:
    def __init__(self, sessions: SessionFactory, chains: ChainRegistry, settings: PolicySettings | None = None) -> None:
        self._sessions = sessions
        self._chains = chains
        self._settings = settings or PolicySettings()
        self._locks = KeyedLocks()
        # The widest window the policy last asked for: where the next decision starts locking.
        self._scope = Per.WALLET

    # --- DECIDE --------------------------------------------------------------------------------
    async def decide(self, withdrawal_id: str) -> PolicyVerdict:
        """Judge once; a retry returns the recorded decision."""
        async with self._sessions() as session:
            async with session.begin():
                subject, recorded = await _subject_and_decision(session, withdrawal_id)
            if recorded is not None:
                return verdict_of(recorded)
            scope = self._scope
            while True:
                try:
                    decision, judgement = await self._decide_holding(session, subject, scope)
                    break
                except _WiderWindows as wider:
                    # The policy changed to windows wider than the locks held: rolled back, lock wider.
                    scope = self._scope = wider.scope
        activity.logger.info(
            "policy decided", extra={"outcome": judgement.outcome, "rule_id": judgement.rule_id, "policy_version": judgement.version}
        )
        return verdict_of(decision)

    async def _decide_holding(self, session: AsyncSession, subject: Subject, scope: Per) -> tuple[PolicyDecision, Judgement]:
        locks = decision_locks(subject, scope)
        exclusive = next(parts for parts, shared in locks if not shared)
        # The in-process lock first, before a pooled connection is borrowed (activities/locks.py).
        async with self._locks.hold(*exclusive), session.begin():
            await advisory_locks(session, locks)
            withdrawal, wallet = await _load(session, subject.withdrawal_id)
            version, document = await store.current(session)
            judge = self.judge(document, version)
            needed = WINDOW_WIDTH.index(judge.widest_window() or Per.WALLET)
            if needed > WINDOW_WIDTH.index(scope):
                raise _WiderWindows(WINDOW_WIDTH[needed])
            candidate = await self.candidate(session, withdrawal, wallet)
            if _housekeeping(withdrawal):
                judgement = _exempt(version, withdrawal)
            else:
                judgement = await judge.judge(candidate, lambda window: self._totals(session, withdrawal, window))
            decision = await self._record(session, withdrawal, DECIDE, judgement)
            withdrawal.policy_version, withdrawal.policy_rule_id, withdrawal.policy_outcome = version, judgement.rule_id, judgement.outcome
            withdrawal.updated_at = utcnow()
            session.add(withdrawal)
            if judgement.outcome in (Outcome.ALLOW, Outcome.REQUIRE_APPROVAL):
                session.add(
                    PolicySpend(
                        withdrawal_id=withdrawal.id,
                        owner=withdrawal.owner,
                        wallet_id=withdrawal.wallet_id,
                        chain=withdrawal.chain,
                        asset=withdrawal.asset,
                        amount=withdrawal.amount,
                        internal=candidate.internal,
                        approval_required=judgement.outcome == Outcome.REQUIRE_APPROVAL,
                        # PostgreSQL's clock (the same for every worker), read now, under the lock.
                        # A SQL expression the server evaluates at insert; sqlmodel types the field as the Python value only.
                        at=sa.func.clock_timestamp(),  # type: ignore[arg-type]
                    )
                )
        return decision, judgement

    # --- RECHECK -------------------------------------------------------------------------------
    async def recheck_in(self, session: AsyncSession, withdrawal_id: str) -> Recheck | None:
        """Judge again by the current policy, with the windows as its decision saw them (the
        spends decided before its own, minus those given back), in the caller's transaction
        (the signing step's, which has the withdrawal and wallet loaded already). None: the
        withdrawal was never judged by the policy (accepted before the engine existed): the
        caller keeps the old rules."""
        decided = await _decision(session, withdrawal_id, DECIDE)
        if decided is None:
            return None
        if decided.outcome == Outcome.EXEMPT:
            return Recheck()
        withdrawal, wallet = await _load(session, withdrawal_id, lock=False)
        spend = (await session.exec(select(PolicySpend).where(PolicySpend.withdrawal_id == withdrawal_id))).first()
        as_of = (spend.id, spend.at) if spend is not None and spend.id is not None else None
        version, document = await store.current(session)
        candidate = await self.candidate(session, withdrawal, wallet)
        judgement = await self.judge(document, version).judge(candidate, lambda window: self._totals(session, withdrawal, window, as_of=as_of))
        last = await _decision(session, withdrawal_id, RECHECK)
        if last is None or (last.policy_version, last.rule_id, last.outcome) != (version, judgement.rule_id, judgement.outcome):
            await self._record(session, withdrawal, RECHECK, judgement)
        if judgement.error_code is not None:
            activity.logger.warning("policy re-check refuses to sign", extra={"outcome": judgement.outcome, "rule_id": judgement.rule_id})
            return Recheck(refusal=refusal_of(judgement))
        if judgement.outcome == Outcome.REQUIRE_APPROVAL and judgement.quorum is not None:
            return Recheck(quorum=quorum_of(judgement.quorum, judgement.approvers))
        return Recheck()

    # --- dry run (custody policy test) -------------------------------------------------------------
    async def explain(
        self, session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet, document: PolicyDocument, version: int
    ) -> tuple[Candidate, Judgement]:
        """Judge a hypothetical withdrawal (not stored) as DECIDE would now; nothing is recorded."""
        candidate = await self.candidate(session, withdrawal, wallet)
        judgement = await self.judge(document, version).judge(candidate, lambda window: self._totals(session, withdrawal, window))
        return candidate, judgement

    # --- the pieces ----------------------------------------------------------------------------
    def judge(self, document: PolicyDocument, version: int) -> Judge:
        return Judge(document, version, self._settings_rules())

    def _settings_rules(self) -> list[Rule]:
        """CUSTODY_APPROVAL_THRESHOLDS as rules after the stored ones: one approver above the
        threshold, counting what the wallet sent without approval in the window (0: this
        withdrawal alone), so splitting a withdrawal does not slip under it."""
        window = self._settings.approval_threshold_window_seconds
        rules = []
        for (chain, asset), threshold in sorted(self._settings.approval_thresholds.items()):
            decimals = self._chains.get(chain).asset(asset).decimals
            rules.append(
                Rule(
                    id=f"settings:approval-threshold:{chain}:{asset}",
                    name=f"CUSTODY_APPROVAL_THRESHOLDS {chain}:{asset}",
                    match=Match(
                        chains=[chain],
                        assets=[asset],
                        amount=AmountRange(
                            above=to_decimal_string(threshold, decimals),
                            window_seconds=window or None,
                            per=Per.WALLET,
                            counted=Counted.UNAPPROVED,
                        ),
                    ),
                    action="REQUIRE_APPROVAL",  # type: ignore[arg-type]
                    quorum=Quorum(count=1, role=Role.APPROVER),
                )
            )
        return rules

    async def candidate(self, session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet) -> Candidate:
        chain = self._chains.get(withdrawal.chain)
        initiator = withdrawal.requested_by or withdrawal.owner
        user = await session.get(User, initiator)
        pool_key = await session.get(PoolKey, wallet.id) if wallet.owner.startswith("pool:") else None
        entry = await store.live_entry(session, withdrawal.owner, withdrawal.chain, withdrawal.destination)
        in_book, note = store.usable(entry, utcnow())
        own = await session.exec(
            select(Wallet.id).where(Wallet.chain == withdrawal.chain, Wallet.address == withdrawal.destination, Wallet.owner == withdrawal.owner)
        )
        hodl_needs_approval = False
        if pool_key is not None and pool_key.tier == PoolTier.HODL:
            limit = self._settings.hodl_auto_approve.get(withdrawal.chain)
            hodl_needs_approval = limit is None or withdrawal.amount > limit
        return Candidate(
            owner=withdrawal.owner,
            wallet_id=wallet.id,
            chain=withdrawal.chain,
            asset=withdrawal.asset,
            decimals=chain.asset(withdrawal.asset).decimals,
            amount=withdrawal.amount,
            initiator=initiator,
            initiator_roles=frozenset(user.roles if user is not None else []),
            pool_tier=pool_key.tier if pool_key else None,
            in_address_book=in_book,
            address_note=note,
            internal=own.first() is not None,
            hodl_needs_approval=hodl_needs_approval,
        )

    @staticmethod
    async def _totals(session: AsyncSession, withdrawal: Withdrawal, window: Window, as_of: tuple[int, datetime] | None = None) -> Totals:
        return await store.window_totals(
            session,
            window,
            chain=withdrawal.chain,
            asset=withdrawal.asset,
            wallet_id=withdrawal.wallet_id,
            owner=withdrawal.owner,
            as_of=as_of,
        )

    @staticmethod
    async def _record(session: AsyncSession, withdrawal: Withdrawal, stage: str, judgement: Judgement) -> PolicyDecision:
        quorum = None
        if judgement.quorum is not None and judgement.outcome == Outcome.REQUIRE_APPROVAL:
            quorum = judgement.quorum.model_dump(mode="json", exclude_none=True) | {"approvers": judgement.approvers}
        decision = PolicyDecision(
            withdrawal_id=withdrawal.id,
            stage=stage,
            policy_version=judgement.version,
            rule_id=judgement.rule_id,
            rule_name=judgement.rule_name,
            outcome=judgement.outcome,
            reason=judgement.reason,
            quorum=quorum,
            details=judgement.details,
        )
        session.add(decision)
        summary = {"stage": stage, "policy_version": str(judgement.version), "rule_id": judgement.rule_id, "outcome": judgement.outcome}
        await session.flush()
        await audit.append(
            session,
            actor=POLICY_ACTOR,
            action=f"withdrawal.policy_{'decided' if stage == DECIDE else 'rechecked'}",
            object_type="withdrawal",
            object_id=withdrawal.id,
            details=summary | {"reason": judgement.reason, **judgement.details},
        )
        metrics.POLICY_DECISIONS.labels(stage=stage, outcome=judgement.outcome).inc()
        return decision


class PolicyActivities:
    def __init__(self, judge: PolicyJudge) -> None:
        self.judge = judge

    @activity.defn(name="decide_withdrawal_policy")
    async def decide(self, withdrawal_id: str) -> PolicyVerdict:
        """Which rule of which policy version lets this withdrawal through, holds it for a
        quorum, or refuses it (POLICY_BLOCKED, LIMIT_EXCEEDED: which rule, what remains)."""
        return await self.judge.decide(withdrawal_id)


def verdict_of(decision: PolicyDecision) -> PolicyVerdict:
    quorum = decision.quorum or {}
    return PolicyVerdict(
        outcome=decision.outcome,
        policy_version=decision.policy_version,
        rule_id=decision.rule_id,
        rule_name=decision.rule_name,
        reason=decision.reason,
        error_code={Outcome.BLOCK: PolicyBlocked.code, Outcome.LIMIT_EXCEEDED: LimitExceeded.code}.get(decision.outcome),
        approvals_required=int(quorum.get("count", 0)) if decision.outcome == Outcome.REQUIRE_APPROVAL else 0,
        approver_role=quorum.get("role"),
        approver_group=quorum.get("group"),
        approvers=list(quorum.get("approvers", [])),
    )


def quorum_of(quorum: Quorum, members: list[str]) -> ApprovalQuorum:
    if quorum.group is not None:
        return ApprovalQuorum(count=quorum.count, role=None, members=frozenset(members))
    return ApprovalQuorum(count=quorum.count, role=quorum.role.value if quorum.role else Role.APPROVER.value)


def refusal_of(judgement: Judgement) -> CustodyError:
    details = {"rule_id": judgement.rule_id, "policy_version": judgement.version, **judgement.details}
    if judgement.outcome == Outcome.LIMIT_EXCEEDED:
        return LimitExceeded(judgement.reason, **details)
    return PolicyBlocked(judgement.reason, **details)


def _housekeeping(withdrawal: Withdrawal) -> bool:
    return withdrawal.kind in HOUSEKEEPING_KINDS or withdrawal.sweep


def _exempt(version: int, withdrawal: Withdrawal) -> Judgement:
    what = "a sweep of a custody key" if withdrawal.sweep else f"custody housekeeping ({withdrawal.kind})"
    why = f"{what}: moves no one's money out"
    return Judgement(Outcome.EXEMPT, "exempt", "custody housekeeping", version, why, trace=[Step("exempt", "custody housekeeping", True, why)])


@dataclass(frozen=True)
class Subject:
    """What places a withdrawal in the rolling windows (none of it changes after it is accepted)."""

    withdrawal_id: str
    chain: str
    asset: str
    owner: str
    wallet_id: str


class _WiderWindows(Exception):
    def __init__(self, scope: Per) -> None:
        super().__init__(scope)
        self.scope = scope


def decision_locks(subject: Subject, scope: Per) -> list[tuple[tuple[str, ...], bool]]:
    """The advisory locks a decision holds while it reads its windows and writes its spend:
    exclusive at `scope` (the widest window it adds up), shared above it, widest first.

    Windows add up withdrawals of one chain and asset, per wallet, owner or everyone, so those
    are nested scopes: a decision adding up everyone's excludes every other of the chain and
    asset, one per owner excludes that owner's, one per wallet (or with no window) that
    wallet's, and decisions of different wallets otherwise run at once. Every decision holds
    the chain and asset at least shared, so one judged by a newer policy with wider windows
    still waits for one judged by the older policy."""
    levels = [
        ("policy-chain-asset", subject.chain, subject.asset),
        ("policy-owner", subject.chain, subject.asset, subject.owner),
        ("policy-wallet", subject.chain, subject.asset, subject.owner, subject.wallet_id),
    ]
    depth = len(WINDOW_WIDTH) - 1 - WINDOW_WIDTH.index(scope)
    # Shared: the one lock every decision took exclusive before these, so a worker still running
    # that code during a rolling deploy waits for these decisions and they for its.
    before_scopes = (("policy", "decide"), True)
    return [before_scopes, *((parts, level < depth) for level, parts in enumerate(levels[: depth + 1]))]


async def _subject_and_decision(session: AsyncSession, withdrawal_id: str) -> tuple[Subject, PolicyDecision | None]:
    """The withdrawal's place in the windows, and its DECIDE if recorded already, in one read."""
    w = Withdrawal.__table__.c  # type: ignore[attr-defined]
    decided = sa.and_(col(PolicyDecision.withdrawal_id) == w.id, col(PolicyDecision.stage) == DECIDE)
    query = (
        sa.select(w.chain, w.asset, w.owner, w.wallet_id, PolicyDecision)
        .select_from(Withdrawal)
        .outerjoin(PolicyDecision, decided)
        .where(w.id == withdrawal_id)
    )
    # sqlmodel's exec is typed for its own select of at most four columns; this is SQLAlchemy's.
    row = (await session.exec(query)).first()  # type: ignore[call-overload]
    if row is None:
        raise WithdrawalNotFound("no such withdrawal", withdrawal_id=withdrawal_id)
    chain, asset, owner, wallet_id, recorded = row
    return Subject(withdrawal_id, chain, asset, owner, wallet_id), recorded


async def _decision(session: AsyncSession, withdrawal_id: str, stage: str) -> PolicyDecision | None:
    rows = await session.exec(
        select(PolicyDecision)
        .where(PolicyDecision.withdrawal_id == withdrawal_id, PolicyDecision.stage == stage)
        .order_by(col(PolicyDecision.id).desc())
        .limit(1)
    )
    return rows.first()


async def _load(session: AsyncSession, withdrawal_id: str, *, lock: bool = True) -> tuple[Withdrawal, Wallet]:
    withdrawal = await session.get(Withdrawal, withdrawal_id, with_for_update=lock)
    if withdrawal is None:
        raise WithdrawalNotFound("no such withdrawal", withdrawal_id=withdrawal_id)
    wallet = await session.get(Wallet, withdrawal.wallet_id)
    if wallet is None or wallet.owner != withdrawal.owner:
        raise WalletNotFound("wallet not found for this owner", wallet_id=withdrawal.wallet_id)
    return withdrawal, wallet
