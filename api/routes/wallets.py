"""Wallets: create (through WalletCreationWorkflow), read, balances, (de)activate, dev funding."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header, Response, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

from activities.faucet import FaucetInput
from api.deps import OwnerDep, SessionDep, StateDep
from core.errors import (
    ERROR_CODES,
    AlreadyFunded,
    CustodyError,
    InvalidAmount,
    NotAvailable,
    RateLimited,
    RecipientNoTrustline,
    SubmissionFailed,
    WalletInactive,
    WalletLabelTaken,
    WalletNotFound,
)
from core.money import to_base_units, to_decimal_string
from db.reservations import held_funds
from models.db import Wallet, utcnow
from models.payloads import WalletCreationInput
from models.schemas import (
    AssetBalance,
    FundRequest,
    FundResult,
    WalletBalances,
    WalletCreate,
    WalletList,
    WalletPublic,
)
from workflows.faucet import FaucetWorkflow
from workflows.wallet_creation import WalletCreationWorkflow

router = APIRouter(prefix="/v1/wallets", tags=["wallets"])

WALLET_CREATION_WAIT_SECONDS = 10


def _public(wallet: Wallet) -> WalletPublic:
    return WalletPublic.model_validate(wallet, from_attributes=True)


async def owned_wallet(session: SessionDep, owner: str, wallet_id: str) -> Wallet:
    wallet = await session.get(Wallet, wallet_id)
    if wallet is None or wallet.owner != owner:
        raise WalletNotFound("wallet not found", wallet_id=wallet_id)
    return wallet


async def _run_creation(state: StateDep, wallet: Wallet) -> None:
    """Start (or join) the creation workflow and wait briefly for it to finish."""
    workflow_id = f"wallet-{wallet.id}"
    try:
        handle = await state.temporal.start_workflow(
            WalletCreationWorkflow.run,
            WalletCreationInput(wallet_id=wallet.id),
            id=workflow_id,
            task_queue=state.settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Create {wallet.chain} wallet {wallet.label!r} for {wallet.owner}",
        )
    except WorkflowAlreadyStartedError:
        handle = state.temporal.get_workflow_handle(workflow_id)
    try:
        await asyncio.wait_for(handle.result(), timeout=WALLET_CREATION_WAIT_SECONDS)
    except (TimeoutError, WorkflowFailureError):
        pass  # the caller sees CREATING and polls GET /v1/wallets/{id}


@router.post(
    "",
    response_model=WalletPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "Same Idempotency-Key: the wallet created the first time"}},
)
async def create_wallet(
    body: WalletCreate,
    owner: OwnerDep,
    state: StateDep,
    session: SessionDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> WalletPublic:
    chain = state.chains.get(body.chain)
    if idempotency_key:
        existing = (
            await session.exec(select(Wallet).where(Wallet.owner == owner, Wallet.chain == chain.name, Wallet.idempotency_key == idempotency_key))
        ).first()
        if existing is not None:
            if existing.status == "CREATING":
                await _run_creation(state, existing)
                await session.refresh(existing)
            response.status_code = status.HTTP_200_OK
            return _public(existing)
    wallet = Wallet(
        id=str(uuid.uuid4()),
        owner=owner,
        chain=chain.name,
        label=body.label,
        signer_backend=state.settings.signer_backend,
        idempotency_key=idempotency_key,
    )
    session.add(wallet)
    try:
        await session.commit()
    except IntegrityError as e:
        await session.rollback()
        if idempotency_key and "uq_wallets_idempotency" in str(e):
            return await create_wallet(body, owner, state, session, response, idempotency_key)
        raise WalletLabelTaken("an active wallet with this label already exists on this chain", label=body.label, chain=chain.name) from e
    await _run_creation(state, wallet)
    await session.refresh(wallet)
    if wallet.status == "CREATING":
        response.status_code = status.HTTP_202_ACCEPTED
    return _public(wallet)


@router.get("", response_model=WalletList)
async def list_wallets(owner: OwnerDep, session: SessionDep, chain: str | None = None, status_filter: str | None = None) -> WalletList:
    query = select(Wallet).where(Wallet.owner == owner).order_by(col(Wallet.created_at).desc())
    if chain:
        query = query.where(Wallet.chain == chain.lower())
    if status_filter:
        query = query.where(Wallet.status == status_filter.upper())
    return WalletList(items=[_public(w) for w in (await session.exec(query)).all()])


@router.get("/{wallet_id}", response_model=WalletPublic)
async def get_wallet(wallet_id: str, owner: OwnerDep, session: SessionDep) -> WalletPublic:
    return _public(await owned_wallet(session, owner, wallet_id))


async def _set_active(session: SessionDep, owner: str, wallet_id: str, active: bool) -> WalletPublic:
    wallet = await owned_wallet(session, owner, wallet_id)
    if wallet.status not in ("ACTIVE", "INACTIVE"):
        raise WalletInactive(f"a {wallet.status} wallet cannot be changed", wallet_id=wallet_id)
    label = wallet.label
    wallet.status = "ACTIVE" if active else "INACTIVE"
    wallet.updated_at = utcnow()
    session.add(wallet)
    try:
        await session.commit()
    except IntegrityError as e:
        await session.rollback()
        raise WalletLabelTaken("another active wallet already uses this label", label=label) from e
    return _public(wallet)


@router.post("/{wallet_id}/activate", response_model=WalletPublic)
async def activate_wallet(wallet_id: str, owner: OwnerDep, session: SessionDep) -> WalletPublic:
    return await _set_active(session, owner, wallet_id, True)


@router.post("/{wallet_id}/deactivate", response_model=WalletPublic)
async def deactivate_wallet(wallet_id: str, owner: OwnerDep, session: SessionDep) -> WalletPublic:
    return await _set_active(session, owner, wallet_id, False)


@router.get("/{wallet_id}/balances", response_model=WalletBalances)
async def wallet_balances(wallet_id: str, owner: OwnerDep, state: StateDep, session: SessionDep) -> WalletBalances:
    """On-chain balances (read-only RPC) next to what in-flight withdrawals hold."""
    wallet = await owned_wallet(session, owner, wallet_id)
    if wallet.address is None:
        raise WalletInactive("wallet has no address yet", wallet_id=wallet_id)
    chain = state.chains.get(wallet.chain)
    reserved = (await held_funds(session, wallet.id)).by_asset(chain.settings.native_symbol)  # type: ignore[attr-defined]
    assets = chain.assets()  # type: ignore[attr-defined]
    funded, *amounts = await asyncio.gather(chain.account_exists(wallet.address), *(chain.balance(wallet.address, a) for a in assets))
    return WalletBalances(
        wallet_id=wallet.id,
        chain=wallet.chain,
        address=wallet.address,
        funded=funded,
        balances=[
            AssetBalance(
                asset=a.symbol,
                contract=a.contract,
                decimals=a.decimals,
                balance=to_decimal_string(amount, a.decimals),
                balance_base_units=str(amount),
                reserved=to_decimal_string(reserved.get(a.symbol, 0), a.decimals),
            )
            for a, amount in zip(assets, amounts, strict=True)
        ],
    )


@router.post("/{wallet_id}/fund", response_model=FundResult)
async def fund_wallet(wallet_id: str, body: FundRequest, owner: OwnerDep, state: StateDep, session: SessionDep) -> FundResult:
    """Test networks only: pay the wallet from the chain's faucet (anvil's dev account, a Solana
    airdrop or test-token mint, Stellar's friendbot or test-asset issuer). The answer says what
    was funded."""
    wallet = await owned_wallet(session, owner, wallet_id)
    chain = state.chains.get(wallet.chain)
    chain_settings = chain.settings  # type: ignore[attr-defined]
    if not getattr(chain_settings, "faucet_enabled", False):
        raise NotAvailable("funding is only available on test networks", chain=wallet.chain)
    if wallet.address is None:
        raise WalletInactive("wallet has no address yet", wallet_id=wallet_id)
    asset = chain.asset(body.asset or chain_settings.native_symbol)
    amount = None if body.amount is None else to_base_units(body.amount, asset.decimals)
    faucet_limit = getattr(chain_settings, "faucet_max_wei", None)
    if asset.is_native and faucet_limit is not None and amount is not None and amount > faucet_limit:
        raise NotAvailable("amount exceeds the faucet's limit", limit=str(faucet_limit))
    day = datetime.now(UTC).strftime("%Y%m%d")
    key = f"custody:faucet:{wallet.id}:{day}"
    used = await state.redis.incr(key)
    await state.redis.expire(key, 2 * 86400)
    limit = state.settings.faucet_daily_limit
    if used > limit:
        raise RateLimited(f"a wallet may be funded {limit} times a day", limit=limit)
    try:
        funded = await state.temporal.execute_workflow(
            FaucetWorkflow.run,
            FaucetInput(chain=wallet.chain, address=wallet.address, asset=asset.symbol, amount=amount),
            id=f"fund-{wallet.id}-{uuid.uuid4().hex[:8]}",
            task_queue=state.settings.task_queue,
        )
    except WorkflowFailureError as e:
        await state.redis.decr(key)  # nothing was funded: the attempt does not count
        raise _funding_refusal(e) from e
    return FundResult(
        wallet_id=wallet.id,
        asset=asset.symbol,
        amount=to_decimal_string(funded.amount, asset.decimals),
        amount_base_units=str(funded.amount),
        tx_hash=funded.tx_hash,
        remaining_today=max(limit - used, 0),
    )


# What a faucet refuses with (Chain.faucet): answered with its own code and status.
FAUCET_REFUSALS = (InvalidAmount, AlreadyFunded, NotAvailable, RecipientNoTrustline)


def _funding_refusal(e: WorkflowFailureError) -> CustodyError:
    """The faucet's own refusal with its code and status (FAUCET_REFUSALS); anything else is a
    failed submission (502)."""
    cause = e.cause
    while cause is not None:  # workflow -> activity -> the ApplicationError with custody's code
        error = ERROR_CODES.get(cause.type or "") if isinstance(cause, ApplicationError) else None
        if error is not None:
            if error in FAUCET_REFUSALS:
                return error(cause.message)
            break
        cause = getattr(cause, "cause", None)
    return SubmissionFailed(f"funding failed: {cause or e}")
