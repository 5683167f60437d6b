"""Withdrawals: accept (idempotently) and start WithdrawalWorkflow; read status and history."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from api.deps import CallerDep, OwnerDep, SessionDep, SnapshotSessionDep, StateDep
from api.limits import INT32_MAX
from api.routes.wallets import owned_wallet
from chains.base import Memo
from core import metrics
from core.errors import (
    ChainUnavailable,
    IdempotencyConflict,
    NotAvailable,
    RecipientNotFound,
    UnknownAsset,
    UnknownChain,
    ValidationFailed,
    WalletFrozen,
    WalletInactive,
    WithdrawalNotFound,
)
from core.identity import Identity
from core.money import canonical_decimal_string, to_base_units, to_decimal_string
from db import audit
from models import search_attributes
from models.access import WithdrawalAction
from models.db import TransferAttempt, Wallet, Withdrawal, WithdrawalEvent
from models.intent_seal import seal
from models.payloads import WithdrawalInput, WithdrawalStatus
from models.policy import PolicyDecision
from models.schemas import (
    HandleRecipient,
    MemoIn,
    PolicyDecisionPublic,
    TransferAttemptPublic,
    TrustlineCreate,
    WithdrawalCreate,
    WithdrawalEventPublic,
    WithdrawalList,
    WithdrawalPublic,
)
from workflows.withdrawal import WithdrawalWorkflow

router = APIRouter(prefix="/v1/withdrawals", tags=["withdrawals"])
# Wallet operations that are withdrawals underneath (a Stellar trustline): same rows, same workflow.
wallet_router = APIRouter(prefix="/v1/wallets", tags=["wallets"])


def _request_hash(body: WithdrawalCreate) -> str:
    """What an Idempotency-Key is bound to: the request, with its amount written canonically
    ("0.250" and "0.25" are one request)."""
    canonical = body.model_dump() | {"amount": canonical_decimal_string(body.amount)}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def _request_hashes(body: WithdrawalCreate) -> set[str]:
    """Hashes a replay of `body` may match: rows stored before amounts were canonical hold the
    hash of the amount as it was written."""
    return {_request_hash(body), hashlib.sha256(json.dumps(body.model_dump(), sort_keys=True).encode()).hexdigest()}


def _decimal_amount(state: StateDep, w: Withdrawal) -> str | None:
    """The amount in the asset's unit; None once its chain or asset is no longer configured (its
    decimals with it): the withdrawal is still read, in base units, never refused."""
    try:
        decimals = state.chains.get(w.chain).asset(w.asset).decimals
    except (UnknownChain, UnknownAsset):
        return None
    return to_decimal_string(w.amount, decimals)


async def _public(session: SessionDep, state: StateDep, w: Withdrawal, *, detail: bool) -> WithdrawalPublic:
    public = WithdrawalPublic(
        id=w.id,
        kind=w.kind,
        wallet_id=w.wallet_id,
        owner=w.owner,
        chain=w.chain,
        asset=w.asset,
        to=w.destination,
        recipient_owner=w.recipient_owner,
        retry_of=w.retry_of,
        amount=_decimal_amount(state, w),
        amount_base_units=str(w.amount),
        memo=MemoIn(type=w.memo_type, value=w.memo_value) if w.memo_type and w.memo_value else None,
        status=w.status,
        paused=w.paused,
        paused_by=w.paused_by,
        paused_reason=w.paused_reason,
        approved_by=w.approved_by,
        cancel_requested_by=w.cancel_requested_by,
        error_code=w.error_code,
        error_message=w.error_message,
        tx_hash=w.tx_hash,
        nonce=w.nonce,
        block_number=w.block_number,
        fee_paid_base_units=None if w.fee_paid is None else str(w.fee_paid),
        workflow_id=f"withdrawal-{w.id}",
        policy_version=w.policy_version,
        policy_rule_id=w.policy_rule_id,
        policy_outcome=w.policy_outcome,
        created_at=w.created_at,
        updated_at=w.updated_at,
        completed_at=w.completed_at,
    )
    if detail:
        events = await session.exec(select(WithdrawalEvent).where(WithdrawalEvent.withdrawal_id == w.id).order_by(col(WithdrawalEvent.id)))
        public.history = [WithdrawalEventPublic(status=e.status, at=e.at, detail=e.detail) for e in events.all()]
        attempts = await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == w.id).order_by(col(TransferAttempt.id)))
        public.attempts = [
            TransferAttemptPublic(
                tx_hash=a.tx_hash,
                nonce=a.sequence,
                state=a.state,
                purpose=a.purpose,
                source=(a.fee_params or {}).get("source"),
                created_at=a.created_at,
                broadcast_at=a.broadcast_at,
            )
            for a in attempts.all()
        ]
        decisions = await session.exec(select(PolicyDecision).where(PolicyDecision.withdrawal_id == w.id).order_by(col(PolicyDecision.id)))
        public.policy_decisions = [PolicyDecisionPublic.model_validate(d, from_attributes=True) for d in decisions.all()]
        approvals = await session.exec(
            select(WithdrawalAction.actor)
            .where(WithdrawalAction.withdrawal_id == w.id, WithdrawalAction.action == "APPROVE", WithdrawalAction.state == "ACCEPTED")
            .order_by(col(WithdrawalAction.id))
        )
        public.approvals = list(dict.fromkeys(approvals.all()))
    return public


async def ensure_started(state: StateDep, w: Withdrawal) -> None:
    """Start the workflow for a withdrawal that has not begun; a no-op if it already runs.

    Only PENDING rows are (re)started: anything further along has (or had) its workflow, and
    a closed one forgotten by Temporal after retention must never be run a second time.
    """
    if w.status != WithdrawalStatus.PENDING.value:
        return
    try:
        await state.temporal.start_workflow(
            WithdrawalWorkflow.run,
            WithdrawalInput(withdrawal_id=w.id, chain=w.chain),
            id=f"withdrawal-{w.id}",
            task_queue=state.settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.CHAIN, w.chain),
                    SearchAttributePair(search_attributes.ASSET, w.asset),
                    SearchAttributePair(search_attributes.OWNER, w.owner),
                    SearchAttributePair(search_attributes.STATUS, WithdrawalStatus.PENDING.value),
                ]
            ),
            static_summary=f"Withdrawal of {w.asset} on {w.chain} for {w.owner}",
        )
    except WorkflowAlreadyStartedError:
        pass


# A request that makes a withdrawals row: 202 when new, 200 when the Idempotency-Key replays one.
ACCEPTED_OR_REPLAYED: dict = {
    "response_model": WithdrawalPublic,
    "status_code": status.HTTP_202_ACCEPTED,
    "responses": {200: {"description": "Replay of an earlier request with the same Idempotency-Key"}},
}
IdempotencyKey = Annotated[str, Header(min_length=1, max_length=200)]


@router.post("", **ACCEPTED_OR_REPLAYED)
async def create_withdrawal(
    body: WithdrawalCreate,
    owner: OwnerDep,
    state: StateDep,
    session: SessionDep,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> WithdrawalPublic:
    request_hash = _request_hash(body)
    existing = await _by_idempotency_key(session, owner, idempotency_key)
    if existing is not None:
        return await _replay(state, session, response, existing, _request_hashes(body))

    wallet = await _active_wallet(session, owner, body.wallet_id)
    chain = state.chains.get(wallet.chain)
    asset = chain.asset(body.asset)
    recipient_owner = None
    if isinstance(body.to, HandleRecipient):
        recipient_owner = body.to.handle
        destination = await _wallet_of_handle(session, recipient_owner, wallet.chain)
    else:
        destination = chain.normalize_address(body.to)
    if destination == wallet.address:
        raise ValidationFailed("a wallet cannot withdraw to itself", field="to")
    amount = to_base_units(body.amount, asset.decimals)
    memo = chain.validate_memo(Memo(body.memo.type, body.memo.value)) if body.memo else None
    await _refuse_below_account_minimum(chain, destination, asset, amount)
    withdrawal = Withdrawal(
        id=str(uuid.uuid4()),
        owner=owner,
        wallet_id=wallet.id,
        chain=wallet.chain,
        asset=asset.symbol,
        destination=destination,
        recipient_owner=recipient_owner,
        amount=amount,
        memo_type=memo.kind if memo else None,
        memo_value=memo.value if memo else None,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    return await _insert_and_start(state, session, response, withdrawal)


@wallet_router.post("/{wallet_id}/trustlines", **ACCEPTED_OR_REPLAYED)
async def create_trustline(
    wallet_id: str,
    body: TrustlineCreate,
    owner: OwnerDep,
    state: StateDep,
    session: SessionDep,
    response: Response,
    idempotency_key: IdempotencyKey,
) -> WithdrawalPublic:
    """Let a Stellar wallet hold a credit asset: its own change_trust transaction, run by the
    withdrawal workflow (kind TRUSTLINE, amount 0, to itself) with the same statuses, approvals,
    operator controls and exactly-once steps; read it at `GET /v1/withdrawals/{id}`."""
    request_hash = hashlib.sha256(f"trustline|{wallet_id}|{body.asset}".encode()).hexdigest()
    existing = await _by_idempotency_key(session, owner, idempotency_key)
    if existing is not None:
        return await _replay(state, session, response, existing, {request_hash})
    wallet = await _active_wallet(session, owner, wallet_id)
    chain = state.chains.get(wallet.chain)
    if not chain.has_trustlines:
        raise NotAvailable("accounts on this chain need no trustline to hold an asset", chain=wallet.chain)
    asset = chain.asset(body.asset)
    if asset.is_native:
        raise ValidationFailed(f"{asset.symbol} is the native asset: no trustline", field="asset")
    trustline = Withdrawal(
        id=str(uuid.uuid4()),
        kind="TRUSTLINE",
        owner=owner,
        wallet_id=wallet.id,
        chain=wallet.chain,
        asset=asset.symbol,
        destination=wallet.address,
        amount=0,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    return await _insert_and_start(state, session, response, trustline)


async def _refuse_below_account_minimum(chain, destination: str, asset, amount: int) -> None:  # type: ignore[no-untyped-def]
    """A first payment too small to create its destination account would be accepted and fail on
    chain: refuse it now (BELOW_ACCOUNT_MINIMUM). A read only; with the node unreachable the
    workflow's own validation makes the same check later."""
    try:
        await chain.check_account_minimum(destination, asset, amount)
    except ChainUnavailable:
        pass


async def _active_wallet(session: SessionDep, owner: str, wallet_id: str) -> Wallet:
    wallet = await owned_wallet(session, owner, wallet_id)
    if wallet.status != "ACTIVE" or wallet.address is None:
        raise WalletInactive("wallet is not active", wallet_id=wallet.id)
    if wallet.frozen_at is not None:
        raise WalletFrozen("wallet is frozen by an admin: nothing is signed from it", wallet_id=wallet.id)
    return wallet


def requested_details(withdrawal: Withdrawal) -> dict[str, str]:
    """What an audit entry records of a request: enough to know what was asked, in base units."""
    details = {
        "kind": withdrawal.kind,
        "wallet_id": withdrawal.wallet_id,
        "chain": withdrawal.chain,
        "asset": withdrawal.asset,
        "amount": str(withdrawal.amount),
        "destination": withdrawal.destination,
    }
    return details | ({"retry_of": withdrawal.retry_of} if withdrawal.retry_of else {})


async def _insert_and_start(state: StateDep, session: SessionDep, response: Response, withdrawal: Withdrawal) -> WithdrawalPublic:
    seal(state.settings.intent_seal_key_bytes, withdrawal)
    session.add(withdrawal)
    session.add(WithdrawalEvent(withdrawal_id=withdrawal.id, status=WithdrawalStatus.PENDING.value))
    try:
        await session.flush()  # a concurrent request with the same key fails here, before the audit lock
        await audit.append(
            session,
            actor=withdrawal.requested_by or withdrawal.owner,
            action="withdrawal.requested",
            object_type="withdrawal",
            object_id=withdrawal.id,
            details=requested_details(withdrawal),
        )
        await session.commit()
    except IntegrityError:
        await session.rollback()  # a concurrent request with the same key won the race
        existing = await _by_idempotency_key(session, withdrawal.owner, withdrawal.idempotency_key)
        if existing is None:
            raise
        return await _replay(state, session, response, existing, {withdrawal.request_hash})
    metrics.WITHDRAWALS_REQUESTED.labels(chain=withdrawal.chain, asset=withdrawal.asset).inc()
    await ensure_started(state, withdrawal)
    return await _public(session, state, withdrawal, detail=False)


async def _wallet_of_handle(session: SessionDep, handle: str, chain: str) -> str:
    """A custody user's receiving address on `chain`: their active wallet labelled "default",
    else their oldest active one."""
    rows = await session.exec(
        select(Wallet)
        .where(Wallet.owner == handle, Wallet.chain == chain, Wallet.status == "ACTIVE")
        .order_by(col(Wallet.label) != "default", col(Wallet.created_at))
    )
    wallet = rows.first()
    if wallet is None or wallet.address is None:
        raise RecipientNotFound(f"no active {chain} wallet for {handle!r}", handle=handle, chain=chain)
    return wallet.address


async def _by_idempotency_key(session: SessionDep, owner: str, key: str) -> Withdrawal | None:
    rows = await session.exec(select(Withdrawal).where(Withdrawal.owner == owner, Withdrawal.idempotency_key == key))
    return rows.first()


async def _replay(state: StateDep, session: SessionDep, response: Response, existing: Withdrawal, request_hashes: set[str]) -> WithdrawalPublic:
    if existing.request_hash not in request_hashes:
        raise IdempotencyConflict("this Idempotency-Key was used with a different request", withdrawal_id=existing.id)
    await ensure_started(state, existing)
    response.status_code = status.HTTP_200_OK
    return await _public(session, state, existing, detail=False)


async def visible_withdrawal(session: SessionDep, state: StateDep, caller: Identity | None, withdrawal_id: str) -> Withdrawal:
    """The withdrawal if the caller owns it or acts on anyone's (an operator's or approver's
    grant on this route); None: already authorized. Others' answer 404: ids do not leak."""
    withdrawal = await session.get(Withdrawal, withdrawal_id)
    allowed = caller is None or (withdrawal is not None and (withdrawal.owner == caller.id or caller.any_owner))
    if withdrawal is None or not allowed:
        raise WithdrawalNotFound("withdrawal not found", withdrawal_id=withdrawal_id)
    return withdrawal


@router.get("/{withdrawal_id}", response_model=WithdrawalPublic)
async def get_withdrawal(withdrawal_id: str, caller: CallerDep, state: StateDep, session: SnapshotSessionDep) -> WithdrawalPublic:
    withdrawal = await visible_withdrawal(session, state, caller, withdrawal_id)
    return await _public(session, state, withdrawal, detail=True)


@router.get("", response_model=WithdrawalList)
async def list_withdrawals(
    caller: CallerDep,
    state: StateDep,
    session: SessionDep,
    status_filter: Annotated[WithdrawalStatus | None, Query(alias="status")] = None,
    wallet_id: str | None = None,
    chain: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=INT32_MAX)] = 0,
) -> WithdrawalList:
    # Withdrawals of a chain no longer configured cannot be shown in units: left out of lists.
    query = select(Withdrawal).where(col(Withdrawal.chain).in_(state.chains.names()))
    if not caller.any_owner:
        query = query.where(Withdrawal.owner == caller.id)
    if status_filter:
        query = query.where(Withdrawal.status == status_filter.value)
    if wallet_id:
        query = query.where(Withdrawal.wallet_id == wallet_id)
    if chain:
        query = query.where(Withdrawal.chain == chain.lower())
    query = query.order_by(col(Withdrawal.created_at).desc()).limit(limit).offset(offset)
    rows = (await session.exec(query)).all()
    return WithdrawalList(items=[await _public(session, state, w, detail=False) for w in rows])
