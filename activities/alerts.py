"""Alerts on a withdrawal: something an operator must look at while the withdrawal goes on (a
replacement the fee cap or the KMS refuses, a nonce gap, an activity failing with an error custody
did not foresee). Each is a WithdrawalEvent with status ALERT (shown in GET /v1/withdrawals/{id}),
a counter (custody_withdrawal_alerts_total{chain, code}), an error log line and a webhook event
(`withdrawal.alert`); recorded once per code and message however often the step that raises it is
retried."""

from __future__ import annotations

import logging

from sqlmodel import select

from core import metrics
from core.errors import WithdrawalNotFound
from db import audit
from db.engine import SessionFactory
from db.webhook_outbox import enqueue_withdrawal_event
from models.db import Withdrawal, WithdrawalEvent

log = logging.getLogger(__name__)


async def record_withdrawal_alert(sessions: SessionFactory, withdrawal_id: str, code: str, message: str) -> bool:
    """True when the alert is new (recorded and counted now)."""
    detail = {"code": code, "message": message}
    async with sessions() as session, session.begin():
        withdrawal = await session.get(Withdrawal, withdrawal_id, with_for_update=True)
        if withdrawal is None:
            raise WithdrawalNotFound("no such withdrawal", withdrawal_id=withdrawal_id)
        seen = await session.exec(select(WithdrawalEvent).where(WithdrawalEvent.withdrawal_id == withdrawal_id, WithdrawalEvent.status == "ALERT"))
        if any(e.detail == detail for e in seen.all()):
            return False
        session.add(WithdrawalEvent(withdrawal_id=withdrawal_id, status="ALERT", detail=detail))
        enqueue_withdrawal_event(session, withdrawal, "alert", detail)
        await audit.append(
            session,
            actor="system:custody",
            action="withdrawal.alert",
            object_type="withdrawal",
            object_id=withdrawal_id,
            details=detail,
        )
        chain = withdrawal.chain
    metrics.WITHDRAWAL_ALERTS.labels(chain=chain, code=code).inc()
    log.error("withdrawal alert", extra={"withdrawal_id": withdrawal_id, "alert": code, "detail": message})
    return True
