"""Operator controls over HTTP: pause, resume, cancel, approve. Each is a Temporal signal or
update on `withdrawal-<id>`, the same as `custody withdrawals ...` and `temporal workflow ...`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uuid

from fastapi import APIRouter, Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from pydantic import BaseModel, Field
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.deps import OwnerDep, SessionDep, StateDep
from api.routes.withdrawals import _public, ensure_started, visible_withdrawal
from activities.transfers import attempts_of, may_still_land, released_slot, transfer_intent
from core.errors import AttemptMayStillLand, OperationRefused, TemporalUnavailable, Unauthorized
from core.temporal import temporal_unreachable
from models.db import Wallet, Withdrawal, WithdrawalEvent
from models.payloads import OnChainState, OperatorRequest, WithdrawalStatus
from models.schemas import WithdrawalPublic
from workflows.withdrawal import WithdrawalWorkflow

router = APIRouter(prefix="/v1/withdrawals", tags=["operations"])

SIGNAL_SETTLE_POLLS = 50  # x 0.1 s


class OperatorAction(BaseModel):
    reason: str = Field(default="", max_length=500)


def _not_delivered(error: RPCError) -> Exception:
    """Temporal out of reach says nothing about the workflow (503: try again); an answer that
    it is not there is WORKFLOW_NOT_RUNNING."""
    if temporal_unreachable(error):
        return TemporalUnavailable(f"Temporal did not answer ({error.message}): try again")
    return OperationRefused("WORKFLOW_NOT_RUNNING", f"the withdrawal's workflow is not running: {error.message}")


async def _signal(state: StateDep, withdrawal_id: str, name: str, request: OperatorRequest) -> None:
    handle = state.temporal.get_workflow_handle(f"withdrawal-{withdrawal_id}")
    try:
        await handle.signal(name, request)
    except RPCError as e:
        raise _not_delivered(e) from e


async def _update(state: StateDep, withdrawal_id: str, update, request: OperatorRequest) -> None:  # type: ignore[no-untyped-def]
    handle = state.temporal.get_workflow_handle_for(WithdrawalWorkflow.run, f"withdrawal-{withdrawal_id}")
    try:
        await handle.execute_update(update, request)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        if isinstance(cause, ApplicationError):
            raise OperationRefused(cause.type or "OPERATION_REFUSED", cause.message) from e
        raise OperationRefused("OPERATION_REFUSED", str(cause or e)) from e
    except RPCError as e:
        raise _not_delivered(e) from e


def _refuse_if_final(status: str, code: str) -> None:
    if WithdrawalStatus(status).is_final:
        raise OperationRefused(code, f"withdrawal is already {status}")


@router.post("/{withdrawal_id}/pause", response_model=WithdrawalPublic)
async def pause(withdrawal_id: str, body: OperatorAction, caller: OwnerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_if_final(withdrawal.status, "ALREADY_FINAL")
    await _signal(state, withdrawal_id, "pause", OperatorRequest(by=caller, reason=body.reason))
    return await _refreshed(session, state, withdrawal_id, until=lambda w: w.paused or WithdrawalStatus(w.status).is_final)


@router.post("/{withdrawal_id}/resume", response_model=WithdrawalPublic)
async def resume(withdrawal_id: str, body: OperatorAction, caller: OwnerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_if_final(withdrawal.status, "ALREADY_FINAL")
    await _signal(state, withdrawal_id, "resume", OperatorRequest(by=caller, reason=body.reason))
    return await _refreshed(session, state, withdrawal_id, until=lambda w: not w.paused)


@router.post("/{withdrawal_id}/cancel", response_model=WithdrawalPublic)
async def cancel(withdrawal_id: str, body: OperatorAction, caller: OwnerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    """Accepted means the cancellation is under way; the final status says which side won."""
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_if_final(withdrawal.status, "CANCEL_TOO_LATE")
    await _update(state, withdrawal_id, WithdrawalWorkflow.cancel, OperatorRequest(by=caller, reason=body.reason))
    return await _refreshed(session, state, withdrawal_id)


@router.post("/{withdrawal_id}/approve", response_model=WithdrawalPublic)
async def approve(withdrawal_id: str, body: OperatorAction, caller: OwnerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    if caller not in state.settings.operators:
        raise Unauthorized("only operators approve withdrawals")
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    if withdrawal.owner == caller:
        raise OperationRefused("SELF_APPROVAL", "the requester cannot approve their own withdrawal")
    _refuse_if_final(withdrawal.status, "NOT_AWAITING_APPROVAL")
    await _update(state, withdrawal_id, WithdrawalWorkflow.approve, OperatorRequest(by=caller, reason=body.reason))
    return await _refreshed(session, state, withdrawal_id)


@router.post("/{withdrawal_id}/retry", response_model=WithdrawalPublic, status_code=202)
async def retry(
    withdrawal_id: str, caller: OwnerDep, state: StateDep, session: SessionDep, response: Response
) -> WithdrawalPublic:
    """Resubmit a FAILED withdrawal as a new one linked by `retry_of`, through every step again
    (validation, approval, funds, a fresh nonce). The failed one stays FAILED: by the time it
    failed its nonce was released only if none of its attempts could still land, so the two can
    never both pay. Retrying twice returns the same resubmission."""
    failed = await visible_withdrawal(session, state, caller, withdrawal_id)
    if failed.status != WithdrawalStatus.FAILED.value:
        raise OperationRefused("NOT_RETRYABLE", f"only FAILED withdrawals can be retried; this one is {failed.status}")
    if failed.owner.startswith("pool:") or failed.sweep or failed.kind == "GAP_FILL":
        # Pool transfers belong to a rebalance run, which plans its own next attempt.
        raise OperationRefused("NOT_RETRYABLE", "key-pool transfers and gap fills are retried by custody, not by hand")
    key = f"retry-of-{failed.id}"
    existing = (
        await session.exec(select(Withdrawal).where(Withdrawal.owner == failed.owner, Withdrawal.idempotency_key == key))
    ).first()
    if existing is not None:
        response.status_code = 200
        return await _public(session, state, existing, detail=True)
    await _refuse_while_an_attempt_may_land(session, state, failed)
    resubmission = Withdrawal(
        id=str(uuid.uuid4()),
        kind=failed.kind,
        owner=failed.owner,
        wallet_id=failed.wallet_id,
        chain=failed.chain,
        asset=failed.asset,
        destination=failed.destination,
        recipient_owner=failed.recipient_owner,
        amount=failed.amount,
        memo_type=failed.memo_type,
        memo_value=failed.memo_value,
        idempotency_key=key,
        request_hash=failed.request_hash,
        retry_of=failed.id,
    )
    session.add(resubmission)
    session.add(WithdrawalEvent(withdrawal_id=resubmission.id, status="PENDING", detail={"retry_of": failed.id, "by": caller}))
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()  # a concurrent retry won
        return await retry(withdrawal_id, caller, state, session, response)
    await ensure_started(state, resubmission)
    return await _public(session, state, resubmission, detail=True)


async def _refuse_while_an_attempt_may_land(session: SessionDep, state: StateDep, original: Withdrawal) -> None:
    """A FAILED withdrawal that signed may have bytes that can still land (refused when sent,
    so its nonce went back unused): a retry then pays twice unless it takes that very slot
    (EVM: the retry signs at the original's released nonce, so at most one is ever mined).
    Otherwise the retry waits until the chain proves no attempt can land (409)."""
    attempts = await attempts_of(session, original.id)
    if not attempts:
        return
    chain = state.chains.get(original.chain)
    wallet = await session.get(Wallet, original.wallet_id)
    assert wallet is not None
    verdict = await may_still_land(chain, transfer_intent(chain, original, wallet), attempts)
    if verdict is None:
        return
    if verdict == OnChainState.PENDING and chain.queues_future_sequences and await released_slot(session, original):
        return
    if verdict == OnChainState.CONFIRMED:
        message = "an attempt of this withdrawal landed on chain: it must not be paid again (reconcile it)"
    else:
        message = "an attempt of this withdrawal can still land; retry once it has expired or its slot is used"
    raise AttemptMayStillLand(message, attempts=[a.tx_hash for a in attempts])


async def _refreshed(
    session: SessionDep, state: StateDep, withdrawal_id: str, until: Callable[[Withdrawal], bool] | None = None
) -> WithdrawalPublic:
    """The withdrawal as stored; for signals (which return before the workflow handles them),
    wait briefly until the workflow has recorded the change."""
    for _ in range(SIGNAL_SETTLE_POLLS):
        session.expire_all()
        withdrawal = await visible_withdrawal(session, state, None, withdrawal_id)
        if until is None or until(withdrawal):
            break
        await asyncio.sleep(0.1)
    return await _public(session, state, withdrawal, detail=True)
