"""Key pools (seed 004): read a chain's pool, lease / use / return single-use explorer keys,
start a rebalance. Everything here needs the OPERATOR role with the `operations` scope (api/permissions.py): a lease is
spending authority over pool funds.

Spending with a leased explorer: `POST /v1/pools/{chain}/explorers/{lease_id}/withdrawals`, by
the leaser, once per lease, while the lease is active. It is an ordinary withdrawal (same
workflow, approvals, exactly-once), owned by `pool:<chain>` and naming the leaser as requester.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from activities.pools import (
    lease_explorer,
    lease_withdrawal,
    pool_settings,
    pool_snapshot,
    return_explorer,
)
from api.deps import OwnerDep, SessionDep, StateDep
from api.routes.withdrawals import _public, ensure_started
from api.scheduling import RunStarted, run_now
from chains.base import Memo
from core.money import to_base_units
from models.db import Wallet
from models.payloads import ExplorerLease, LeaseRequest, LeaseReturn, RebalanceInput
from models.pools import PoolKey, PoolRebalance
from models.schemas import MemoIn, WithdrawalPublic
from workflows.rebalance import RebalanceWorkflow

router = APIRouter(prefix="/v1/pools", tags=["pools"])


class LeasePublic(BaseModel):
    lease_id: str
    chain: str
    wallet_id: str
    address: str
    state: str
    leased_by: str
    expires_at: datetime


class LeaseWithdrawalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="destination address")
    asset: str = Field(min_length=1, max_length=32)
    amount: str = Field(min_length=1, max_length=100, description="decimal string in the asset's unit")
    memo: MemoIn | None = None


class RebalanceRun(BaseModel):
    chain: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    workflow_id: str
    result: dict[str, Any]
    error: str | None


class PoolPublic(BaseModel):
    chain: str
    asset: str
    settings: dict[str, Any]
    sizes: dict[str, dict[str, int]] = Field(description="tier -> state -> number of keys")
    balances: dict[str, str] = Field(description="tier -> native balance held (decimal string)")
    keys: list[dict[str, Any]]
    last_rebalance: RebalanceRun | None


async def _lease_public(session: SessionDep, lease: ExplorerLease) -> LeasePublic:
    wallet = await session.get(Wallet, lease.wallet_id)
    assert wallet is not None and wallet.address is not None
    return LeasePublic(
        lease_id=lease.lease_id,
        chain=lease.chain,
        wallet_id=lease.wallet_id,
        address=wallet.address,
        state=lease.state,
        leased_by=lease.leased_by,
        expires_at=datetime.fromisoformat(lease.expires_at),
    )


@router.get("/{chain}", response_model=PoolPublic)
async def show_pool(chain: str, caller: OwnerDep, state: StateDep, session: SessionDep) -> PoolPublic:
    """Keys by tier and state, on-chain balances, and the last rebalance's result."""
    chain = chain.lower()
    pool = pool_settings(state.settings, chain)
    snapshot = await pool_snapshot(state.sessions, state.chains, chain, with_balances=True)  # type: ignore[arg-type]
    last = (
        await session.exec(select(PoolRebalance).where(PoolRebalance.chain == chain).order_by(col(PoolRebalance.started_at).desc()).limit(1))
    ).first()
    return PoolPublic(
        chain=chain,
        asset=snapshot.asset,
        settings=pool.model_dump(),
        sizes=snapshot.sizes,
        balances=snapshot.tier_balances,
        keys=snapshot.keys,
        last_rebalance=None
        if last is None
        else RebalanceRun(
            chain=last.chain,
            status=last.status,
            started_at=last.started_at,
            finished_at=last.finished_at,
            workflow_id=last.id,
            result=last.result,
            error=last.error,
        ),
    )


@router.post("/{chain}/explorers/lease", response_model=LeasePublic, status_code=status.HTTP_201_CREATED)
async def lease(
    chain: str,
    caller: OwnerDep,
    state: StateDep,
    session: SessionDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> LeasePublic:
    """Lease one available explorer key for one transaction (409 NO_EXPLORER_AVAILABLE when none).
    With an Idempotency-Key, repeating the request returns the same lease."""
    chain = chain.lower()
    lease_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"custody-lease:{caller}:{chain}:{idempotency_key}")) if idempotency_key else None
    if lease_id is not None and (await session.exec(select(PoolKey.wallet_id).where(PoolKey.lease_id == lease_id))).first():
        response.status_code = status.HTTP_200_OK
    leased = await lease_explorer(state.sessions, state.settings, LeaseRequest(chain=chain, leased_by=caller, lease_id=lease_id))  # type: ignore[arg-type]
    return await _lease_public(session, leased)


@router.post("/{chain}/explorers/{lease_id}/withdrawals", response_model=WithdrawalPublic, status_code=status.HTTP_202_ACCEPTED)
async def lease_spend(
    chain: str,
    lease_id: str,
    body: LeaseWithdrawalCreate,
    caller: OwnerDep,
    state: StateDep,
    session: SessionDep,
    response: Response,
    idempotency_key: Annotated[str, Header(min_length=1, max_length=200)],
) -> WithdrawalPublic:
    """The leaser's one withdrawal from the leased explorer (single use)."""
    adapter = state.chains.get(chain)
    asset = adapter.asset(body.asset)
    memo = adapter.validate_memo(Memo(body.memo.type, body.memo.value)) if body.memo else None
    withdrawal, created = await lease_withdrawal(
        state.sessions,  # type: ignore[arg-type]
        state.chains,
        chain=chain,
        lease_id=lease_id,
        leaser=caller,
        idempotency_key=idempotency_key,
        destination=body.to,
        asset=asset.symbol,
        amount=to_base_units(body.amount, asset.decimals),
        memo_type=memo.kind if memo else None,
        memo_value=memo.value if memo else None,
        seal_key=state.settings.intent_seal_key_bytes,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    await ensure_started(state, withdrawal)
    return await _public(session, state, withdrawal, detail=False)


@router.post("/{chain}/explorers/{lease_id}/return", response_model=LeasePublic)
async def return_lease(chain: str, lease_id: str, caller: OwnerDep, state: StateDep, session: SessionDep) -> LeasePublic:
    """Retire the leased key after its one use; the next rebalance recovers its funds."""
    returned = await return_explorer(state.sessions, LeaseReturn(chain=chain, lease_id=lease_id, by=caller))  # type: ignore[arg-type]
    return await _lease_public(session, returned)


@router.post("/{chain}/rebalance", response_model=RunStarted, status_code=status.HTTP_202_ACCEPTED)
async def rebalance(chain: str, caller: OwnerDep, state: StateDep) -> RunStarted:
    """Run a rebalance now: trigger the chain's schedule (overlap SKIP: nothing if one runs);
    without a schedule, start a run with a unique id."""
    chain = chain.lower()
    pool_settings(state.settings, chain)
    return await run_now(
        state.temporal,
        state.settings.task_queue,
        chain,
        f"rebalance-{chain}",
        RebalanceWorkflow.run,
        RebalanceInput(chain=chain),
        f"Manual rebalance of the {chain} key pool by {caller}",
    )
