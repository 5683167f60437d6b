"""Operator statistics (seeds 001, 003): counts and volumes by status, chain and day; time to
COMPLETED (average and p95); failure reasons. Operators only."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import OwnerDep, SessionDep, StateDep
from core.errors import Unauthorized, UnknownAsset, UnknownChain
from core.money import to_decimal_string
from models.db import Withdrawal

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
async def stats(
    caller: OwnerDep, state: StateDep, session: SessionDep, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> Stats:
    if caller not in state.settings.operators:
        raise Unauthorized("statistics are for operators")
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
    for chain, asset, status, count, volume in rows:
        try:
            decimals = state.chains.get(chain).asset(asset).decimals
            shown = to_decimal_string(int(volume or 0), decimals)
        except (UnknownChain, UnknownAsset):  # a chain or asset no longer configured
            shown = str(int(volume or 0))
        by_status.append(StatusCount(chain=chain, asset=asset, status=status, count=count, volume=shown))

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
            sa.select(sa.func.avg(elapsed), sa.func.percentile_cont(0.95).within_group(elapsed)).where(
                recent, w.status == "COMPLETED"
            )
        )
    ).one()

    reasons = (
        await session.exec(
            sa.select(w.error_code, sa.func.count())
            .where(recent, w.status == "FAILED")
            .group_by(w.error_code)
            .order_by(sa.func.count().desc())
        )
    ).all()
    return Stats(
        by_status=by_status,
        by_day=[DailyCount(day=d, chain=c, count=n, completed=ok, failed=bad) for d, c, n, ok, bad in daily],
        seconds_to_completed_avg=None if avg is None else round(float(avg), 3),
        seconds_to_completed_p95=None if p95 is None else round(float(p95), 3),
        failure_reasons=[FailureReason(error_code=code or "UNKNOWN", count=n) for code, n in reasons],
    )
