"""Webhook tables: owners' endpoints (secret envelope-encrypted), the transactional outbox the
withdrawal activities write one row to per status change, the deliveries the dispatcher makes of
it (one per event and endpoint, plus redeliveries) and every HTTP attempt of a delivery.

The flow (activities/webhooks.py): a status change commits its outbox row in the same
transaction; WebhookDispatcherWorkflow turns each outbox row into delivery rows (a unique index
makes that exactly once) and starts one WebhookDeliveryWorkflow per delivery (`webhook-delivery-
<delivery id>`), which posts, records each attempt, and retries with backoff until the period ends.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.columns import timestamp_field as _ts
from models.payloads import WithdrawalStatus

# What an endpoint can subscribe to: every withdrawal status a workflow records, and its alerts.
# "*" subscribes to all of them (and to event types added later).
WITHDRAWAL_EVENTS = tuple(f"withdrawal.{s.value.lower()}" for s in WithdrawalStatus if s != WithdrawalStatus.PENDING) + ("withdrawal.alert",)
ALL_EVENTS = "*"


class WebhookEndpoint(SQLModel, table=True):
    """Where an owner wants events posted. The signing secret is stored only sealed: AES-256-GCM
    under its own data key, which the keystore's key-encryption key wraps (signers/secret_box.py),
    bound to the endpoint id; it is shown once, in the creation answer."""

    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    url: str
    events: list[str] = Field(default_factory=list, sa_type=JSONB)
    description: str = ""
    status: str = "ACTIVE"  # ACTIVE | DELETED (deliveries and their history are kept)
    secret_ciphertext: bytes = Field(sa_type=sa.LargeBinary)
    secret_nonce: bytes = Field(sa_type=sa.LargeBinary)
    secret_wrapped_key: bytes = Field(sa_type=sa.LargeBinary)
    secret_kek_id: str
    created_by: str
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    deleted_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    deleted_by: str | None = None

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events


class WebhookOutboxEvent(SQLModel, table=True):
    """One event to announce, written in the transaction of the change it announces (so it
    exists exactly when the change committed). `dispatched_at` is set once its deliveries exist."""

    __tablename__ = "webhook_outbox"

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    event_id: str = Field(unique=True)  # evt_<hex>: receivers dedupe on it
    event_type: str
    owner: str
    object_type: str
    object_id: str
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    occurred_at: datetime = _ts()
    dispatched_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint: the exact body (signed anew, with a fresh timestamp, at each
    attempt), its state and a summary of its attempts. A redelivery is a new row pointing at the
    delivery it repeats, with the same event id and body."""

    __tablename__ = "webhook_deliveries"

    id: str = Field(primary_key=True)
    endpoint_id: str = Field(foreign_key="webhook_endpoints.id", index=True)
    owner: str = Field(index=True)
    event_id: str
    event_type: str
    body: str
    redelivery_of: str | None = None
    requested_by: str  # system:dispatcher, or who asked for the redelivery
    state: str = "PENDING"  # PENDING | DELIVERED | FAILED
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    created_at: datetime = _ts()
    started_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))  # its workflow exists
    deadline_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))  # no attempt after this
    finished_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class WebhookAttempt(SQLModel, table=True):
    """One HTTP POST of a delivery: answer status (None: no answer), time to the answer, error."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (sa.UniqueConstraint("delivery_id", "number", name="uq_webhook_attempts_number"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    delivery_id: str = Field(foreign_key="webhook_deliveries.id", index=True)
    number: int
    at: datetime = _ts()  # when it was sent
    status_code: int | None = None
    latency_ms: int
    error: str | None = None
