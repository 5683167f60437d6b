"""The transactional outbox of webhook events: the only thing the withdrawal hot path does for
webhooks is add one row here, in the transaction that records the status change (so the event
exists exactly when the change committed, once however often the activity is retried). No
lookup, no network: WebhookDispatcherWorkflow reads the rows later (activities/webhooks.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from models.db import Withdrawal, utcnow
from models.webhooks import WebhookOutboxEvent


def withdrawal_snapshot(withdrawal: Withdrawal) -> dict[str, Any]:
    """What a receiver learns about the withdrawal (amounts in base units; the dispatcher adds
    the decimal form). Strings throughout, so JSONB gives back exactly what was written."""
    return {
        "id": withdrawal.id,
        "kind": withdrawal.kind,
        "owner": withdrawal.owner,
        "wallet_id": withdrawal.wallet_id,
        "chain": withdrawal.chain,
        "asset": withdrawal.asset,
        "to": withdrawal.destination,
        "amount_base_units": str(withdrawal.amount),
        "status": withdrawal.status,
        "error_code": withdrawal.error_code,
        "error_message": withdrawal.error_message,
        "tx_hash": withdrawal.tx_hash,
        "nonce": None if withdrawal.nonce is None else str(withdrawal.nonce),
        "block_number": None if withdrawal.block_number is None else str(withdrawal.block_number),
        "fee_paid_base_units": None if withdrawal.fee_paid is None else str(withdrawal.fee_paid),
        "retry_of": withdrawal.retry_of,
    }


def withdrawal_event_row(withdrawal: Withdrawal, event: str, detail: dict[str, Any] | None = None, *, status: str | None = None) -> dict[str, Any]:
    """The outbox row announcing `withdrawal.<event>`; `status`: the one the withdrawal is
    entering, when the row is written with the change rather than after it."""
    snapshot = withdrawal_snapshot(withdrawal) | ({"status": status} if status else {})
    return {
        "event_id": f"evt_{uuid.uuid4().hex}",
        "event_type": f"withdrawal.{event.lower()}",
        "owner": withdrawal.owner,
        "object_type": "withdrawal",
        "object_id": withdrawal.id,
        "payload": {"withdrawal": snapshot, "detail": json.loads(json.dumps(detail or {}, default=str))},
        "occurred_at": utcnow(),
    }


def enqueue_withdrawal_event(session: AsyncSession, withdrawal: Withdrawal, event: str, detail: dict[str, Any] | None = None) -> None:
    """Add the event `withdrawal.<event>` to the caller's open transaction (its commit makes it)."""
    session.add(WebhookOutboxEvent(**withdrawal_event_row(withdrawal, event, detail)))
