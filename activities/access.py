"""The access re-check before anything is signed (a first attempt, a fee bump, a cancellation,
a re-sign after expiry), against PostgreSQL only, never against what the workflow was told:

- the owner (and the requester, when another) is not blocked: USER_BLOCKED;
- the wallet is not frozen (WALLET_FROZEN) and still active (WALLET_INACTIVE);
- first attempt: no hold placed through the API is active (ON_HOLD, retried until an operator or
  the owner lifts it through the API), and when the withdrawal needs approval, its quorum of
  distinct approvals is recorded, by approvers with the quorum's role (or in its group) who are
  neither owner nor requester (APPROVAL_NOT_RECORDED);
- a cancellation replacement: the cancellation was recorded by the API (CANCEL_NOT_RECORDED).

A signal or update sent straight to Temporal therefore lifts no hold and approves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core import metrics
from core.errors import ApprovalNotRecorded, CustodyError, OnHold, PermanentError, UserBlocked, WalletFrozen, WalletInactive
from models.access import User, WithdrawalAction, WithdrawalHold
from models.db import Wallet, Withdrawal


class CancelNotRecorded(PermanentError):
    code = "CANCEL_NOT_RECORDED"
    http_status = 409


@dataclass(frozen=True)
class ApprovalQuorum:
    """How many distinct approvals must be recorded, and whose count: holders of `role`, or,
    when `members` is given, those members (a policy group)."""

    count: int = 1
    role: str | None = "APPROVER"
    members: frozenset[str] | None = None

    def counts(self, actor: str, actor_roles: list[str]) -> bool:
        if self.members is not None:
            return actor in self.members
        return self.role is None or self.role in actor_roles


# Before the policy engine: one APPROVER (custody's approval threshold and HODL movements).
ONE_APPROVER = ApprovalQuorum()


class SigningStep(str, Enum):
    FIRST = "sign_transfer"
    BUMP = "bump_fee"
    CANCEL = "cancel_by_replacement"
    RESIGN = "resign_expired_transfer"


async def refusal_to_sign(
    session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet, step: SigningStep, *, quorum: ApprovalQuorum | None = None
) -> CustodyError | None:
    """Why nothing may be signed for `withdrawal` now (None: it may). `quorum`: the approvals
    a first attempt needs (None: none)."""
    refusal = await _refusal(session, withdrawal, wallet, step, quorum)
    if refusal is not None:
        metrics.ACCESS_SIGNING_REFUSED.labels(step=step.value, code=refusal.code).inc()
    return refusal


async def _refusal(
    session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet, step: SigningStep, quorum: ApprovalQuorum | None
) -> CustodyError | None:
    people = {withdrawal.owner, *([withdrawal.requested_by] if withdrawal.requested_by else [])}
    blocked = (await session.exec(select(User.id).where(col(User.id).in_(people), User.status == "BLOCKED"))).first()
    if blocked is not None:
        return UserBlocked(f"user {blocked} is blocked: nothing is signed for them", user=blocked)
    if wallet.frozen_at is not None:
        return WalletFrozen("the wallet is frozen by an admin: nothing is signed from it", wallet_id=wallet.id)
    if wallet.status != "ACTIVE":
        return WalletInactive("the wallet is not active: nothing is signed from it", wallet_id=wallet.id)
    if step == SigningStep.FIRST:
        hold = await _active_hold(session, withdrawal.id)
        if hold is not None:
            return OnHold(
                f"held by {hold.placed_by} ({hold.placed_as}): signing waits until the hold is lifted through the API",
                placed_by=hold.placed_by,
                placed_as=hold.placed_as,
            )
        if quorum is not None:
            return await _missing_approvals(session, withdrawal, quorum)
    if step == SigningStep.CANCEL and not await _recorded(session, withdrawal.id, "CANCEL"):
        return CancelNotRecorded("no cancellation made through custody is recorded for this withdrawal; nothing was signed")
    return None


async def stop_requested(session: AsyncSession, withdrawal_id: str) -> bool:
    """A hold placed or a cancellation made through the API, still standing: a first attempt
    signed meanwhile is not sent in the same step (the workflow holds, or cancels, first)."""
    return await _active_hold(session, withdrawal_id) is not None or await _recorded(session, withdrawal_id, "CANCEL")


async def _active_hold(session: AsyncSession, withdrawal_id: str) -> WithdrawalHold | None:
    """A hold placed through the API and not lifted."""
    rows = await session.exec(select(WithdrawalHold).where(WithdrawalHold.withdrawal_id == withdrawal_id, col(WithdrawalHold.lifted_at).is_(None)))
    return rows.first()


async def approval_refusal(session: AsyncSession, withdrawal: Withdrawal, quorum: ApprovalQuorum) -> CustodyError | None:
    """The first attempt's approval check alone (the rest of `refusal_to_sign` already passed)."""
    refusal = await _missing_approvals(session, withdrawal, quorum)
    if refusal is not None:
        metrics.ACCESS_SIGNING_REFUSED.labels(step=SigningStep.FIRST.value, code=refusal.code).inc()
    return refusal


async def _missing_approvals(session: AsyncSession, withdrawal: Withdrawal, quorum: ApprovalQuorum) -> CustodyError | None:
    people = {withdrawal.owner, *([withdrawal.requested_by] if withdrawal.requested_by else [])}
    approvers = await _approvers(session, withdrawal, excluding=people, quorum=quorum)
    if len(approvers) >= quorum.count:
        return None
    return ApprovalNotRecorded(
        f"this withdrawal needs {quorum.count} approval(s) made through custody by eligible approvers; {len(approvers)} recorded; nothing was signed",
        required=quorum.count,
        recorded=len(approvers),
    )


async def _accepted(session: AsyncSession, withdrawal_id: str, action: str) -> list[WithdrawalAction]:
    rows = await session.exec(
        select(WithdrawalAction).where(
            WithdrawalAction.withdrawal_id == withdrawal_id, WithdrawalAction.action == action, WithdrawalAction.state == "ACCEPTED"
        )
    )
    return list(rows.all())


async def _recorded(session: AsyncSession, withdrawal_id: str, action: str) -> bool:
    return bool(await _accepted(session, withdrawal_id, action))


async def _approvers(session: AsyncSession, withdrawal: Withdrawal, *, excluding: set[str], quorum: ApprovalQuorum) -> set[str]:
    """The distinct identities whose recorded approvals count for `quorum` (the owner and the
    requester never do)."""
    return {a.actor for a in await _accepted(session, withdrawal.id, "APPROVE") if a.actor not in excluding and quorum.counts(a.actor, a.actor_roles)}
