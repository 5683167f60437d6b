"""Operator controls over HTTP: pause, resume, cancel, approve, reject (and pause-all / resume-all).
Each is a Temporal signal or update on `withdrawal-<id>`, sent only after the API authorized it
and recorded it in PostgreSQL with the identity that made it: holds in `withdrawal_holds`,
approvals and cancellations in `withdrawal_actions`. Signing steps re-check those rows
(activities/access.py), so a signal or update sent straight to Temporal approves nothing and
lifts no hold. Only an operator lifts an operator's hold (a pause-all's too)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.workflow import UpdateMethodMultiParam

from activities.transfers import (
    attempts_of,
    may_still_land,
    released_slot,
    transfer_intent,
)
from api.deps import CallerDep, SessionDep, StateDep
from api.routes.withdrawals import _public, ensure_started, requested_details, visible_withdrawal
from core.errors import (
    AttemptMayStillLand,
    Forbidden,
    NotAnApprover,
    OperationRefused,
    TemporalUnavailable,
    UnknownChain,
)
from core.identity import Identity
from core.temporal import temporal_unreachable, workflow_not_ready
from db import audit
from models.access import WithdrawalAction, WithdrawalHold
from models.db import Wallet, Withdrawal, WithdrawalEvent, utcnow
from models.intent_seal import seal
from models.payloads import OnChainState, OperatorRequest, WithdrawalState, WithdrawalStatus
from models.policy import PolicyDecision
from models.schemas import WithdrawalPublic
from workflows.withdrawal import WithdrawalWorkflow

router = APIRouter(prefix="/v1/withdrawals", tags=["operations"])

SIGNAL_SETTLE_POLLS = 50  # x 0.1 s


class OperatorAction(BaseModel):
    reason: str = Field(default="", max_length=500)


class RejectAction(BaseModel):
    reason: str = Field(min_length=1, max_length=500, pattern=r"\S", description="why: required, shown to the requester")


# One of WithdrawalWorkflow's update handlers (cancel, approve, reject), as execute_update takes it.
WorkflowUpdate = UpdateMethodMultiParam[[WithdrawalWorkflow, OperatorRequest], Coroutine[Any, Any, WithdrawalState]]


def _not_delivered(error: RPCError) -> Exception:
    """Temporal out of reach says nothing about the workflow (503: try again), nor does a
    workflow whose last task failed or timed out (a worker died in it) and is being retried: it
    runs, and the same request succeeds once a worker completes that task (it was answered
    WORKFLOW_NOT_RUNNING, and a chaos run then saw the cancel happen through an earlier try). An
    answer that it is not there is WORKFLOW_NOT_RUNNING."""
    if temporal_unreachable(error):
        return TemporalUnavailable(f"Temporal did not answer ({error.message}): try again")
    if workflow_not_ready(error):
        return TemporalUnavailable(f"the withdrawal's workflow cannot take this now ({error.message}): try again")
    return OperationRefused("WORKFLOW_NOT_RUNNING", f"the withdrawal's workflow is not running: {error.message}")


async def _signal(state: StateDep, withdrawal_id: str, name: str, request: OperatorRequest) -> None:
    handle = state.temporal.get_workflow_handle(f"withdrawal-{withdrawal_id}")
    try:
        await handle.signal(name, request)
    except RPCError as e:
        raise _not_delivered(e) from e


async def _update(state: StateDep, withdrawal_id: str, update: WorkflowUpdate, request: OperatorRequest) -> None:
    handle = state.temporal.get_workflow_handle_for(WithdrawalWorkflow.run, f"withdrawal-{withdrawal_id}")
    try:
        # temporalio types an async handler's result as its coroutine; the state it returns is
        # not needed here (the caller re-reads the row).
        _ = await handle.execute_update(update, request)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        if isinstance(cause, ApplicationError) and cause.type == "AcceptedUpdateCompletedWorkflow":
            # Accepted, then the run ended before the handler returned (a run of a version
            # before "handlers-finish-before-end"): the action took effect; the state tells the rest.
            return
        if isinstance(cause, ApplicationError):
            raise OperationRefused(cause.type or "OPERATION_REFUSED", cause.message) from e
        raise OperationRefused("OPERATION_REFUSED", str(cause or e)) from e
    except RPCError as e:
        raise _not_delivered(e) from e


def _refuse_if_final(status: str, code: str) -> None:
    if WithdrawalStatus(status).is_final:
        raise OperationRefused(code, f"withdrawal is already {status}")


def _placed_as(caller: Identity) -> str:
    """OPERATOR when the caller acts with an operator's grant on this route, else OWNER."""
    return "OPERATOR" if caller.any_owner else "OWNER"


async def _active_holds(session: SessionDep, withdrawal_id: str) -> list[WithdrawalHold]:
    rows = await session.exec(
        select(WithdrawalHold).where(WithdrawalHold.withdrawal_id == withdrawal_id, WithdrawalHold.lifted_at == None)  # noqa: E711
    )
    return list(rows.all())


def _lift(session: SessionDep, holds: list[WithdrawalHold], by: str) -> None:
    now = utcnow()
    for hold in holds:
        hold.lifted_by, hold.lifted_at = by, now
        session.add(hold)


async def _record_action(session: SessionDep, withdrawal_id: str, action: str, caller: Identity, reason: str) -> WithdrawalAction:
    row = WithdrawalAction(withdrawal_id=withdrawal_id, action=action, actor=caller.id, actor_roles=caller.role_names, via=caller.via, reason=reason)
    session.add(row)
    await session.commit()
    return row


async def _recorded_update(
    session: SessionDep,
    state: StateDep,
    withdrawal_id: str,
    action: str,
    update: WorkflowUpdate,
    caller: Identity,
    reason: str,
    ended_code: str,
) -> None:
    """Record the action, then deliver it as a workflow update. The record comes first so the
    signing guard can count it; when the workflow refuses, it is marked REFUSED and counts for
    nothing when signing is re-checked. A workflow that ended after the caller's status check
    (the withdrawal went final meanwhile, e.g. a retried cancel whose first try took effect) is
    answered as that check would have answered it: `ended_code` with the final status, not
    WORKFLOW_NOT_RUNNING, which would tell an operator the action could not happen."""
    row = await _record_action(session, withdrawal_id, action, caller, reason)
    try:
        await _update(state, withdrawal_id, update, OperatorRequest(by=caller.id, reason=reason))
    except OperationRefused as refused:
        row.state = "REFUSED"
        session.add(row)
        await session.commit()
        if refused.code == "WORKFLOW_NOT_RUNNING":
            # The final status is written (finish) before the workflow completes: read it now.
            status = (await session.exec(select(Withdrawal.status).where(Withdrawal.id == withdrawal_id))).one()
            if WithdrawalStatus(status).is_final:
                raise OperationRefused(ended_code, f"withdrawal is already {status}") from refused
        raise


@router.post("/{withdrawal_id}/pause", response_model=WithdrawalPublic)
async def pause(withdrawal_id: str, body: OperatorAction, caller: CallerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    """Hold the withdrawal before its next side-effecting step. The hold is recorded first:
    until it is lifted through the API nothing is signed for it."""
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_if_final(withdrawal.status, "ALREADY_FINAL")
    hold = WithdrawalHold(withdrawal_id=withdrawal_id, placed_by=caller.id, placed_as=_placed_as(caller), via=caller.via, reason=body.reason)
    session.add(hold)
    await session.commit()
    try:
        await _signal(state, withdrawal_id, "pause", OperatorRequest(by=caller.id, reason=body.reason))
    except OperationRefused:
        _lift(session, [hold], "custody: the workflow is not running")
        await session.commit()
        raise
    return await _refreshed(session, state, withdrawal_id, until=lambda w: w.paused or WithdrawalStatus(w.status).is_final)


@router.post("/{withdrawal_id}/resume", response_model=WithdrawalPublic)
async def resume(withdrawal_id: str, body: OperatorAction, caller: CallerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    """Lift the holds and let the withdrawal go on. An operator's hold (a pause-all's too) is
    lifted only by an operator: the owner gets 403 and the withdrawal stays held."""
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_if_final(withdrawal.status, "ALREADY_FINAL")
    holds = await _active_holds(session, withdrawal_id)
    if any(h.placed_as == "OPERATOR" for h in holds) and not caller.any_owner:
        raise Forbidden("an operator paused this withdrawal: only an operator resumes it", withdrawal_id=withdrawal_id)
    _lift(session, holds, caller.id)
    await session.commit()
    await _signal(state, withdrawal_id, "resume", OperatorRequest(by=caller.id, reason=body.reason))
    return await _refreshed(session, state, withdrawal_id, until=lambda w: not w.paused)


@router.post("/{withdrawal_id}/cancel", response_model=WithdrawalPublic)
async def cancel(withdrawal_id: str, body: OperatorAction, caller: CallerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    """Accepted means the cancellation is under way; the final status says which side won."""
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_if_final(withdrawal.status, "CANCEL_TOO_LATE")
    await _recorded_update(session, state, withdrawal_id, "CANCEL", WithdrawalWorkflow.cancel, caller, body.reason, "CANCEL_TOO_LATE")
    return await _refreshed(session, state, withdrawal_id)


@router.post("/{withdrawal_id}/approve", response_model=WithdrawalPublic)
async def approve(withdrawal_id: str, body: OperatorAction, caller: CallerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    """Four eyes: an APPROVER who is neither the owner nor the requester; with a policy quorum,
    one of its role's holders or its group's members, once (N distinct approvals release it)."""
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_self_approval(withdrawal, caller, "approve")
    _refuse_if_final(withdrawal.status, "NOT_AWAITING_APPROVAL")
    await _refuse_ineligible_approver(session, withdrawal, caller)
    await _recorded_update(session, state, withdrawal_id, "APPROVE", WithdrawalWorkflow.approve, caller, body.reason, "NOT_AWAITING_APPROVAL")
    return await _refreshed(session, state, withdrawal_id)


@router.post("/{withdrawal_id}/reject", response_model=WithdrawalPublic)
async def reject(withdrawal_id: str, body: RejectAction, caller: CallerDep, state: StateDep, session: SessionDep) -> WithdrawalPublic:
    """Turn down a withdrawal awaiting approval, with a reason: who may approve it may reject it
    (an APPROVER of its quorum's role or group, not the owner or requester). One rejection ends it
    CANCELLED with error_code REJECTED; its hold is released and nothing was signed."""
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    _refuse_self_approval(withdrawal, caller, "reject")
    if withdrawal.status != WithdrawalStatus.AWAITING_APPROVAL.value:
        raise OperationRefused("NOT_AWAITING_APPROVAL", f"withdrawal is {withdrawal.status}, not awaiting approval")
    await _refuse_ineligible_approver(session, withdrawal, caller)
    await _recorded_update(session, state, withdrawal_id, "REJECT", WithdrawalWorkflow.reject, caller, body.reason, "NOT_AWAITING_APPROVAL")
    return await _refreshed(session, state, withdrawal_id, until=lambda w: WithdrawalStatus(w.status).is_final)


def _refuse_self_approval(withdrawal: Withdrawal, caller: Identity, verb: str) -> None:
    """Four eyes: neither the owner nor the requester decides on their own withdrawal."""
    if caller.id in (withdrawal.owner, withdrawal.requested_by):
        raise OperationRefused("SELF_APPROVAL", f"the requester cannot {verb} their own withdrawal")


async def _refuse_ineligible_approver(session: SessionDep, withdrawal: Withdrawal, caller: Identity) -> None:
    """The quorum the policy asked for counts its role's holders or its group's members, each once."""
    decision = (
        await session.exec(select(PolicyDecision).where(PolicyDecision.withdrawal_id == withdrawal.id, PolicyDecision.stage == "DECIDE"))
    ).first()
    quorum = (decision.quorum or {}) if decision is not None else {}
    if quorum.get("group") and caller.id not in quorum.get("approvers", []):
        raise NotAnApprover(f"only members of group {quorum['group']} approve this withdrawal", withdrawal_id=withdrawal.id)
    if not quorum.get("group") and quorum.get("role") and quorum["role"] not in caller.role_names:
        raise NotAnApprover(f"only holders of role {quorum['role']} approve this withdrawal", withdrawal_id=withdrawal.id)
    earlier = await session.exec(
        select(WithdrawalAction).where(
            WithdrawalAction.withdrawal_id == withdrawal.id,
            WithdrawalAction.action == "APPROVE",
            WithdrawalAction.state == "ACCEPTED",
            WithdrawalAction.actor == caller.id,
        )
    )
    if earlier.first() is not None:
        raise OperationRefused("ALREADY_APPROVED", f"{caller.id} approved this withdrawal already: a quorum needs distinct approvers")


class ChainAction(BaseModel):
    chain: str = Field(min_length=1, max_length=64)
    reason: str = Field(default="", max_length=500)
    task_queue: str | None = Field(default=None, max_length=200, description="only this task queue's workflows")


class ChainActionResult(BaseModel):
    chain: str
    count: int
    batch: str


async def _running_on(state: StateDep, body: ChainAction) -> list[str]:
    """Withdrawal ids of the running workflows on the chain (Temporal's visibility)."""
    chain = state.chains.get(body.chain).name
    query = f"WorkflowType = 'WithdrawalWorkflow' AND ExecutionStatus = 'Running' AND CustodyChain = '{chain}'"
    if body.task_queue:
        if "'" in body.task_queue:
            raise UnknownChain("not a task queue name", task_queue=body.task_queue)
        query += f" AND TaskQueue = '{body.task_queue}'"
    return [e.id.removeprefix("withdrawal-") async for e in state.temporal.list_workflows(query)]


@router.post("/pause-all", response_model=ChainActionResult)
async def pause_all(body: ChainAction, caller: CallerDep, state: StateDep, session: SessionDep) -> ChainActionResult:
    """Incident switch: hold every running withdrawal on a chain (operators). Each gets an
    operator's hold, which its owner cannot lift."""
    batch = f"pause-all-{uuid.uuid4().hex[:12]}"
    count = 0
    for withdrawal_id in await _running_on(state, body):
        if await session.get(Withdrawal, withdrawal_id) is None:
            continue
        session.add(
            WithdrawalHold(
                withdrawal_id=withdrawal_id,
                placed_by=caller.id,
                placed_as="OPERATOR",
                via=caller.via,
                reason=body.reason,
                batch=batch,
            )
        )
        await session.commit()
        try:
            await _signal(state, withdrawal_id, "pause", OperatorRequest(by=caller.id, reason=body.reason))
        except OperationRefused:
            continue  # ended meanwhile
        count += 1
    return ChainActionResult(chain=body.chain.lower(), count=count, batch=batch)


@router.post("/resume-all", response_model=ChainActionResult)
async def resume_all(body: ChainAction, caller: CallerDep, state: StateDep, session: SessionDep) -> ChainActionResult:
    """Lift every hold of the chain's running withdrawals and let them go on (operators)."""
    count = 0
    for withdrawal_id in await _running_on(state, body):
        _lift(session, await _active_holds(session, withdrawal_id), caller.id)
        await session.commit()
        try:
            await _signal(state, withdrawal_id, "resume", OperatorRequest(by=caller.id, reason=body.reason))
        except OperationRefused:
            continue
        count += 1
    return ChainActionResult(chain=body.chain.lower(), count=count, batch="")


@router.post("/{withdrawal_id}/retry", response_model=WithdrawalPublic, status_code=202)
async def retry(withdrawal_id: str, caller: CallerDep, state: StateDep, session: SessionDep, response: Response) -> WithdrawalPublic:
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
    existing = (await session.exec(select(Withdrawal).where(Withdrawal.owner == failed.owner, Withdrawal.idempotency_key == key))).first()
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
    seal(state.settings.intent_seal_key_bytes, resubmission)
    session.add(resubmission)
    session.add(WithdrawalEvent(withdrawal_id=resubmission.id, status="PENDING", detail={"retry_of": failed.id, "by": caller.id}))
    try:
        await session.flush()
        await audit.append(
            session,
            actor=caller.id,
            action="withdrawal.requested",
            object_type="withdrawal",
            object_id=resubmission.id,
            details=requested_details(resubmission),
        )
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


async def _refreshed(session: SessionDep, state: StateDep, withdrawal_id: str, until: Callable[[Withdrawal], bool] | None = None) -> WithdrawalPublic:
    """The withdrawal as stored; for signals (which return before the workflow handles them),
    wait briefly until the workflow has recorded the change."""
    for _ in range(SIGNAL_SETTLE_POLLS):
        session.expire_all()
        withdrawal = await visible_withdrawal(session, state, None, withdrawal_id)
        if until is None or until(withdrawal):
            break
        await asyncio.sleep(0.1)
    return await _public(session, state, withdrawal, detail=True)
