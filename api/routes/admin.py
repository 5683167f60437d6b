"""Operator statistics (seeds 001, 003): counts and volumes by status, chain and day; time to
COMPLETED (average and p95); failure reasons. Reconciliation reports (chain vs database), and a
reconciliation run now. Operators only."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, Field
from sqlmodel import col, select
from temporalio.client import WorkflowFailureError
from temporalio.common import WorkflowIDReusePolicy

from api.deps import OwnerDep, SessionDep, StateDep
from core.errors import ChainUnavailable, NotAvailable, UnknownAsset, UnknownChain
from core.money import to_decimal_string
from models.db import Withdrawal
from models.payloads import ReconciliationInput
from models.reconciliation import ReconciliationReport
from workflows.reconciliation import ReconciliationWorkflow

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class StatusCount(BaseModel):
    chain: str
    asset: str
    status: str
    count: int
    volume: str  # decimal, in the asset's unit


class DailyCount(BaseModel):
    day: str
    chain: str
    count: int
    completed: int
    failed: int


class FailureReason(BaseModel):
    error_code: str
    count: int


class Stats(BaseModel):
    by_status: list[StatusCount]
    by_day: list[DailyCount]
    seconds_to_completed_avg: float | None
    seconds_to_completed_p95: float | None
    failure_reasons: list[FailureReason]


@router.get("/stats", response_model=Stats)
async def stats(caller: OwnerDep, state: StateDep, session: SessionDep, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Stats:
    since = sa.func.now() - sa.func.make_interval(0, 0, 0, days)
    w = Withdrawal.__table__.c
    recent = w.created_at >= since

    rows = (
        await session.exec(
            sa.select(w.chain, w.asset, w.status, sa.func.count(), sa.func.sum(w.amount))
            .where(recent)
            .group_by(w.chain, w.asset, w.status)
            .order_by(w.chain, w.asset, w.status)
        )
    ).all()
    by_status = []
    for chain, asset, withdrawal_status, count, volume in rows:
        try:
            decimals = state.chains.get(chain).asset(asset).decimals
            shown = to_decimal_string(int(volume or 0), decimals)
        except (UnknownChain, UnknownAsset):  # a chain or asset no longer configured
            shown = str(int(volume or 0))
        by_status.append(StatusCount(chain=chain, asset=asset, status=withdrawal_status, count=count, volume=shown))

    day = sa.func.to_char(sa.func.date_trunc("day", w.created_at), "YYYY-MM-DD")
    daily = (
        await session.exec(
            sa.select(
                day,
                w.chain,
                sa.func.count(),
                sa.func.count().filter(w.status == "COMPLETED"),
                sa.func.count().filter(w.status == "FAILED"),
            )
            .where(recent)
            .group_by(day, w.chain)
            .order_by(day, w.chain)
        )
    ).all()

    elapsed = sa.func.extract("epoch", w.completed_at - w.created_at)
    avg, p95 = (
        await session.exec(
            sa.select(sa.func.avg(elapsed), sa.func.percentile_cont(0.95).within_group(elapsed)).where(recent, w.status == "COMPLETED")
        )
    ).one()

    reasons = (
        await session.exec(
            sa.select(w.error_code, sa.func.count()).where(recent, w.status == "FAILED").group_by(w.error_code).order_by(sa.func.count().desc())
        )
    ).all()
    return Stats(
        by_status=by_status,
        by_day=[DailyCount(day=d, chain=c, count=n, completed=ok, failed=bad) for d, c, n, ok, bad in daily],
        seconds_to_completed_avg=None if avg is None else round(float(avg), 3),
        seconds_to_completed_p95=None if p95 is None else round(float(p95), 3),
        failure_reasons=[FailureReason(error_code=code or "UNKNOWN", count=n) for code, n in reasons],
    )


# --- reconciliation ------------------------------------------------------------------------------
class ReconciliationRow(BaseModel):
    """One wallet and asset: decimal strings in the asset's unit (fees and side costs sit on the
    native asset's row). expected = deposits + internal_in - withdrawn - fees - side_costs."""

    wallet_id: str
    owner: str
    label: str
    address: str
    asset: str
    on_chain: str
    deposits: str = Field(description="transfers in from outside, found on chain (faucets included)")
    internal_in: str = Field(description="COMPLETED withdrawals of ours paying this wallet")
    withdrawn: str
    fees: str = Field(description="what landed transactions of ours cost (reverted and cancelled ones included)")
    side_costs: str = Field(description="charged beyond amount and fee (Solana: recipients' token account rent)")
    in_flight_out: str
    in_flight_in: str
    expected: str
    drift: str = Field(description="on chain - expected, when withdrawals in flight cannot explain it; else 0")
    drift_base_units: str
    status: str = Field(description="OK | IN_FLIGHT | DRIFT")


class ReconciliationReportPublic(BaseModel):
    id: str
    run_key: str = Field(description="the ReconciliationWorkflow run that made it")
    chain: str
    status: str = Field(description="OK | MISMATCH (drift, vanished withdrawals or unexplained spends)")
    created_at: datetime
    point: dict[str, Any] = Field(description="EVM: the final block everything was read at")
    rows: list[ReconciliationRow]
    vanished: list[dict[str, Any]] = Field(description="COMPLETED withdrawals whose transaction is gone or failed")
    unexplained: list[dict[str, Any]] = Field(description="spends from our keys (or nonces) no withdrawal explains")
    summary: dict[str, Any]


class ReconciliationRun(BaseModel):
    workflow_id: str
    state: str = Field(description="COMPLETED (report below) or RUNNING (read it later with ?run=)")
    report: ReconciliationReportPublic | None = None


def _operator_chain(state: StateDep, caller: str, chain: str) -> str:
    """The configured chain's name (callers were checked by the route's grants: operators)."""
    return state.chains.get(chain).name  # raises UNKNOWN_CHAIN


def _report_public(state: StateDep, report: ReconciliationReport) -> ReconciliationReportPublic:
    chain = state.chains.get(report.chain)

    def shown(amount: Any, symbol: str) -> str:
        try:
            return to_decimal_string(int(amount), chain.asset(symbol).decimals)
        except UnknownAsset:  # an asset no longer configured
            return str(amount)

    rows = []
    for row in report.rows:
        decimal = {
            k: shown(row[k], row["asset"])
            for k in (
                "on_chain",
                "deposits",
                "internal_in",
                "withdrawn",
                "fees",
                "side_costs",
                "in_flight_out",
                "in_flight_in",
                "expected",
                "drift",
            )
        }
        rows.append(
            ReconciliationRow(
                wallet_id=row["wallet_id"],
                owner=row["owner"],
                label=row["label"],
                address=row["address"],
                asset=row["asset"],
                drift_base_units=row["drift"],
                status=row["status"],
                **decimal,
            )
        )
    native = chain.settings.native_symbol
    vanished = [{**v, "amount": shown(v["amount"], v["asset"])} for v in report.vanished]
    unexplained = []
    for u in report.unexplained:
        if u.get("kind") == "TRANSACTION":
            u = {
                **u,
                "fee": shown(u["fee"], native),
                "moved": [{"asset": m["asset"], "amount": shown(m["amount"], m["asset"])} for m in u["moved"]],
            }
        unexplained.append(u)
    return ReconciliationReportPublic(
        id=report.id,
        run_key=report.run_key,
        chain=report.chain,
        status=report.status,
        created_at=report.created_at,
        point=report.point,
        rows=rows,
        vanished=vanished,
        unexplained=unexplained,
        summary=report.summary,
    )


@router.get("/reconciliation/{chain}", response_model=ReconciliationReportPublic)
async def latest_reconciliation(
    chain: str, caller: OwnerDep, state: StateDep, session: SessionDep, run: str | None = None
) -> ReconciliationReportPublic:
    """The chain's latest reconciliation report (or the report of run `run`)."""
    chain = _operator_chain(state, caller, chain)
    query = select(ReconciliationReport).where(ReconciliationReport.chain == chain)
    if run:
        query = query.where(ReconciliationReport.run_key == run)
    report = (await session.exec(query.order_by(col(ReconciliationReport.created_at).desc()).limit(1))).first()
    if report is None:
        raise NotAvailable("no reconciliation report for this chain yet", chain=chain, run=run)
    return _report_public(state, report)


@router.post(
    "/reconciliation/{chain}/runs",
    response_model=ReconciliationRun,
    responses={202: {"description": "still running: read the report with GET ...?run=<workflow_id>"}},
)
async def run_reconciliation(
    chain: str,
    caller: OwnerDep,
    state: StateDep,
    session: SessionDep,
    response: Response,
    wait_seconds: Annotated[float, Query(ge=0, le=300)] = 20,
) -> ReconciliationRun:
    """Run a ReconciliationWorkflow now and wait up to `wait_seconds` for its report."""
    chain = _operator_chain(state, caller, chain)
    workflow_id = f"reconcile-{chain}-manual-{uuid.uuid4().hex[:12]}"
    handle = await state.temporal.start_workflow(
        ReconciliationWorkflow.run,
        ReconciliationInput(chain=chain),
        id=workflow_id,
        task_queue=state.settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=f"Reconcile {chain}, run by {caller}",
    )
    try:
        await asyncio.wait_for(handle.result(), timeout=wait_seconds)
    except TimeoutError:
        response.status_code = status.HTTP_202_ACCEPTED
        return ReconciliationRun(workflow_id=workflow_id, state="RUNNING")
    except WorkflowFailureError as e:
        raise ChainUnavailable(f"the reconciliation run failed: {e.cause or e}", chain=chain, workflow_id=workflow_id) from e
    report = (await session.exec(select(ReconciliationReport).where(ReconciliationReport.run_key == workflow_id))).one()
    return ReconciliationRun(workflow_id=workflow_id, state="COMPLETED", report=_report_public(state, report))
