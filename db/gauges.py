"""Gauges sampled from PostgreSQL by the worker: how many withdrawals are open in each status
and how long the oldest has been there, so a stuck withdrawal is visible to Prometheus (the
`CustodyWithdrawalStuck` alert in ops/prometheus/custody-alerts.yml) whatever the reason."""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from core import metrics
from db.engine import SessionFactory
from models.db import Withdrawal
from models.payloads import FINAL_STATUSES

log = logging.getLogger(__name__)

SAMPLE_EVERY_SECONDS = 15.0


async def sample_open_withdrawals(sessions: SessionFactory) -> None:
    """One sample: counts and oldest age (since the last status change) per chain and status."""
    final = [s.value for s in FINAL_STATUSES]
    table = Withdrawal.__table__  # type: ignore[attr-defined]
    query = (
        sa.select(
            table.c.chain,
            table.c.status,
            sa.func.count(),
            sa.func.extract("epoch", sa.func.now() - sa.func.min(table.c.updated_at)),
        )
        .where(table.c.status.not_in(final))
        .group_by(table.c.chain, table.c.status)
    )
    async with sessions() as session:
        rows = (await session.exec(query)).all()  # type: ignore[call-overload]
    metrics.WITHDRAWALS_OPEN.clear()
    metrics.WITHDRAWAL_OLDEST_OPEN_SECONDS.clear()
    for chain, status, count, oldest in rows:
        metrics.WITHDRAWALS_OPEN.labels(chain=chain, status=status).set(count)
        metrics.WITHDRAWAL_OLDEST_OPEN_SECONDS.labels(chain=chain, status=status).set(float(oldest or 0))


async def sample_forever(sessions: SessionFactory, every: float = SAMPLE_EVERY_SECONDS) -> None:
    while True:
        try:
            await sample_open_withdrawals(sessions)
        except Exception:  # a sample missed is a gap in a graph, never a reason to stop the worker
            log.warning("could not sample open withdrawals", exc_info=True)
        await asyncio.sleep(every)
