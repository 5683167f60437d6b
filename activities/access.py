"""The access re-check before anything is signed (a first attempt, a fee bump, a cancellation,
a re-sign after expiry), against PostgreSQL only, never against what the workflow was told:

- the owner (and the requester, when another) is not blocked: USER_BLOCKED;
- the wallet is not frozen (WALLET_FROZEN) and still active (WALLET_INACTIVE);
- first attempt: no hold placed through the API is active (ON_HOLD, retried until an operator or
  the owner lifts it through the API), and when the withdrawal needs a second person, an
  approval is recorded by an APPROVER who is neither owner nor requester (APPROVAL_NOT_RECORDED);
- a cancellation replacement: the cancellation was recorded by the API (CANCEL_NOT_RECORDED).

A signal or update sent straight to Temporal therefore lifts no hold and approves nothing.
"""

from __future__ import annotations

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


class SigningStep(str, Enum):
    FIRST = "sign_transfer"
    BUMP = "bump_fee"
    CANCEL = "cancel_by_replacement"
    RESIGN = "resign_expired_transfer"


async def refusal_to_sign(
    session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet, step: SigningStep, *, needs_approval: bool = False
) -> CustodyError | None:
    """Why nothing may be signed for `withdrawal` now (None: it may)."""
    refusal = await _refusal(session, withdrawal, wallet, step, needs_approval)
    if refusal is not None:
        metrics.ACCESS_SIGNING_REFUSED.labels(step=step.value, code=refusal.code).inc()
    return refusal


async def _refusal(
    session: AsyncSession, withdrawal: Withdrawal, wallet: Wallet, step: SigningStep, needs_approval: bool
) -> CustodyError | None:
    people = {withdrawal.owner, *([withdrawal.requested_by] if withdrawal.requested_by else [])}
    blocked = (
        await session.exec(select(User.id).where(col(User.id).in_(people), User.status == "BLOCKED"))
    ).first()
    if blocked is not None:
        return UserBlocked(f"user {blocked} is blocked: nothing is signed for them", user=blocked)
    if wallet.frozen_at is not None:
        return WalletFrozen("the wallet is frozen by an admin: nothing is signed from it", wallet_id=wallet.id)
    if wallet.status != "ACTIVE":
        return WalletInactive("the wallet is not active: nothing is signed from it", wallet_id=wallet.id)
    if step == SigningStep.FIRST:
        hold = (
            await session.exec(
                select(WithdrawalHold).where(WithdrawalHold.withdrawal_id == withdrawal.id, col(WithdrawalHold.lifted_at).is_(None))
            )
        ).first()
        if hold is not None:
            return OnHold(
                f"held by {hold.placed_by} ({hold.placed_as}): signing waits until the hold is lifted through the API",
                placed_by=hold.placed_by, placed_as=hold.placed_as,
            )
        if needs_approval and not await _recorded(session, withdrawal, "APPROVE", excluding=people, role="APPROVER"):
            return ApprovalNotRecorded(
                "this withdrawal needs a second person and no approval made through custody is recorded; nothing was signed"
            )
    if step == SigningStep.CANCEL and not await _recorded(session, withdrawal, "CANCEL"):
        return CancelNotRecorded("no cancellation made through custody is recorded for this withdrawal; nothing was signed")
    return None


async def _recorded(
    session: AsyncSession, withdrawal: Withdrawal, action: str, *, excluding: set[str] = frozenset(), role: str | None = None  # type: ignore[assignment]
) -> bool:
    rows = await session.exec(
        select(WithdrawalAction).where(
            WithdrawalAction.withdrawal_id == withdrawal.id, WithdrawalAction.action == action, WithdrawalAction.state == "ACCEPTED"
        )
    )
    return any(a.actor not in excluding and (role is None or role in a.actor_roles) for a in rows.all())
