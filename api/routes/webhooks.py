"""Webhooks: owners register endpoints (URL, events, secret) and read what was delivered to them;
operators read anyone's deliveries and ask for redeliveries.

The secret is in the creation answer only: stored sealed (signers/secret_box.py), never
returned, never logged. Deliveries are made by the worker (activities/webhooks.py); a
redelivery is a new delivery row that the dispatcher starts like any other.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, func, select

from activities.webhooks import delivery_workflow_id, secret_context
from api.deps import CallerDep, SessionDep, StateDep
from core.errors import WebhookDeliveryInProgress, WebhookDeliveryNotFound, WebhookLimitReached, WebhookNotFound
from core.identity import Identity
from core.receiver_urls import check_receiver_url
from core.webhook_signature import new_secret
from db import audit
from models.db import utcnow
from models.webhooks import ALL_EVENTS, WITHDRAWAL_EVENTS, WebhookAttempt, WebhookDelivery, WebhookEndpoint

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

EventName = Literal[(ALL_EVENTS, *WITHDRAWAL_EVENTS)]  # type: ignore[valid-type]


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, examples=["https://example.com/custody/events"])
    events: list[EventName] = Field(  # type: ignore[valid-type]
        min_length=1,
        max_length=16,
        examples=[["withdrawal.completed", "withdrawal.failed"]],
        description='event types to receive; "*" for all (including types added later)',
    )
    description: str = Field(default="", max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")
    secret: str | None = Field(
        default=None,
        min_length=24,
        max_length=256,
        pattern=r"^[\x21-\x7e]+$",
        description="the HMAC key receivers verify with (printable ASCII, no spaces); default: a new random `whsec_...`",
    )


class WebhookPublic(BaseModel):
    id: str
    owner: str
    url: str
    events: list[str]
    description: str
    status: str
    created_by: str
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="shown this once: custody stores it sealed and never returns it")


class WebhookList(BaseModel):
    items: list[WebhookPublic]


class WebhookAttemptPublic(BaseModel):
    number: int
    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None


class WebhookDeliveryPublic(BaseModel):
    id: str
    webhook_id: str
    owner: str
    event_id: str
    event_type: str
    state: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    redelivery_of: str | None
    requested_by: str
    created_at: datetime
    deadline_at: datetime | None
    finished_at: datetime | None
    workflow_id: str


class WebhookDeliveryDetail(WebhookDeliveryPublic):
    event: dict[str, Any] = Field(description="the body posted (each attempt signs it with a fresh timestamp)")
    history: list[WebhookAttemptPublic]


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDeliveryPublic]


def _public(row: WebhookEndpoint) -> WebhookPublic:
    return WebhookPublic.model_validate(row, from_attributes=True)


def _delivery(row: WebhookDelivery) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(
        **row.model_dump(exclude={"endpoint_id", "body", "started_at"}),
        webhook_id=row.endpoint_id,
        workflow_id=delivery_workflow_id(row.id),
    )


def _visible(owner: str, caller: Identity) -> bool:
    """Owners see their own; operators (an any-owner grant on this route) anyone's."""
    return caller.any_owner or owner == caller.id


async def _endpoint(session: SessionDep, webhook_id: uuid.UUID, caller: Identity, *, for_update: bool = False) -> WebhookEndpoint:
    row = await session.get(WebhookEndpoint, str(webhook_id), with_for_update=for_update)
    if row is None or not _visible(row.owner, caller):
        raise WebhookNotFound("no such webhook endpoint", webhook_id=str(webhook_id))
    return row


async def _owned_delivery(session: SessionDep, delivery_id: uuid.UUID, caller: Identity, *, for_update: bool = False) -> WebhookDelivery:
    row = await session.get(WebhookDelivery, str(delivery_id), with_for_update=for_update)
    if row is None or not _visible(row.owner, caller):
        raise WebhookDeliveryNotFound("no such webhook delivery", delivery_id=str(delivery_id))
    return row


# Literal paths first: /deliveries/{id} must not be read as /{webhook_id}/...
@router.get("/deliveries/{delivery_id}", response_model=WebhookDeliveryDetail)
async def get_delivery(delivery_id: uuid.UUID, caller: CallerDep, session: SessionDep) -> WebhookDeliveryDetail:
    """The delivery, the event it posts, and every attempt (status code, latency, error)."""
    row = await _owned_delivery(session, delivery_id, caller)
    attempts = (await session.exec(select(WebhookAttempt).where(WebhookAttempt.delivery_id == row.id).order_by(col(WebhookAttempt.number)))).all()
    return WebhookDeliveryDetail(
        **_delivery(row).model_dump(),
        event=json.loads(row.body),
        history=[WebhookAttemptPublic.model_validate(a, from_attributes=True) for a in attempts],
    )


@router.post("/deliveries/{delivery_id}/redeliver", response_model=WebhookDeliveryPublic, status_code=status.HTTP_202_ACCEPTED)
async def redeliver(delivery_id: uuid.UUID, caller: CallerDep, session: SessionDep) -> WebhookDeliveryPublic:
    """Post the same event (same event id and body) again, as a new delivery with its own
    attempts and retry period; refused while a delivery of this event to this endpoint is
    still being attempted."""
    original = await _owned_delivery(session, delivery_id, caller, for_update=True)
    endpoint = await session.get(WebhookEndpoint, original.endpoint_id)
    if endpoint is None or endpoint.status != "ACTIVE":
        raise WebhookNotFound("the delivery's endpoint was deleted", webhook_id=original.endpoint_id)
    pending = (
        await session.exec(
            select(WebhookDelivery.id).where(
                WebhookDelivery.endpoint_id == original.endpoint_id,
                WebhookDelivery.event_id == original.event_id,
                WebhookDelivery.state == "PENDING",
            )
        )
    ).first()
    if pending is not None:
        raise WebhookDeliveryInProgress("this event is still being delivered to this endpoint", delivery_id=pending)
    row = WebhookDelivery(
        id=str(uuid.uuid4()),
        endpoint_id=original.endpoint_id,
        owner=original.owner,
        event_id=original.event_id,
        event_type=original.event_type,
        body=original.body,
        redelivery_of=original.id,
        requested_by=caller.id,
    )
    session.add(row)
    await audit.append(
        session,
        actor=caller.id,
        action="webhook.redelivery_requested",
        object_type="webhook_delivery",
        object_id=row.id,
        details={"redelivery_of": original.id, "webhook_id": original.endpoint_id, "event_id": original.event_id},
    )
    await session.commit()
    return _delivery(row)


@router.post("", response_model=WebhookCreated, status_code=status.HTTP_201_CREATED)
async def create_webhook(body: WebhookCreate, caller: CallerDep, session: SessionDep, state: StateDep) -> WebhookCreated:
    """Register an endpoint. The answer carries the secret, this once."""
    url = check_receiver_url(body.url, allow_local=state.settings.webhook_local_receivers_allowed)
    limit = state.settings.webhooks.max_endpoints_per_owner
    active = (
        await session.exec(
            select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.owner == caller.id, WebhookEndpoint.status == "ACTIVE")
        )
    ).one()
    if active >= limit:
        raise WebhookLimitReached(f"at most {limit} active webhook endpoints per owner: delete one first", limit=limit)
    secret = body.secret or new_secret()
    endpoint_id = str(uuid.uuid4())
    sealed = await state.secret_box.seal(secret.encode(), secret_context(endpoint_id))
    events = sorted(set(body.events))
    row = WebhookEndpoint(
        id=endpoint_id,
        owner=caller.id,
        url=url,
        events=events,
        description=body.description,
        secret_ciphertext=sealed.ciphertext,
        secret_nonce=sealed.nonce,
        secret_wrapped_key=sealed.wrapped_key,
        secret_kek_id=sealed.kek_id,
        created_by=caller.id,
    )
    session.add(row)
    await audit.append(
        session,
        actor=caller.id,
        action="webhook.created",
        object_type="webhook",
        object_id=endpoint_id,
        details={"url": url, "events": events},
    )
    await session.commit()
    return WebhookCreated(**_public(row).model_dump(), secret=secret)


@router.get("", response_model=WebhookList)
async def list_webhooks(
    caller: CallerDep,
    session: SessionDep,
    include_deleted: bool = False,
    owner: str | None = Query(default=None, max_length=200, pattern=r"^[^\x00-\x1f]+$"),
) -> WebhookList:
    """The caller's endpoints (operators: anyone's, or `owner`'s)."""
    query = select(WebhookEndpoint).order_by(col(WebhookEndpoint.created_at))
    if not caller.any_owner:
        query = query.where(WebhookEndpoint.owner == caller.id)
    elif owner:
        query = query.where(WebhookEndpoint.owner == owner)
    if not include_deleted:
        query = query.where(WebhookEndpoint.status == "ACTIVE")
    return WebhookList(items=[_public(r) for r in (await session.exec(query.limit(1000))).all()])


@router.get("/{webhook_id}", response_model=WebhookPublic)
async def get_webhook(webhook_id: uuid.UUID, caller: CallerDep, session: SessionDep) -> WebhookPublic:
    return _public(await _endpoint(session, webhook_id, caller))


@router.delete("/{webhook_id}", response_model=WebhookPublic)
async def delete_webhook(webhook_id: uuid.UUID, caller: CallerDep, session: SessionDep) -> WebhookPublic:
    """No new deliveries; those still being attempted end FAILED at their next attempt. The
    endpoint and its delivery history stay readable."""
    row = await _endpoint(session, webhook_id, caller, for_update=True)
    if row.status != "DELETED":
        row.status, row.deleted_at, row.deleted_by, row.updated_at = "DELETED", utcnow(), caller.id, utcnow()
        session.add(row)
        await audit.append(session, actor=caller.id, action="webhook.deleted", object_type="webhook", object_id=row.id, details={"url": row.url})
    await session.commit()
    return _public(row)


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList)
async def list_deliveries(
    webhook_id: uuid.UUID,
    caller: CallerDep,
    session: SessionDep,
    state: Literal["PENDING", "DELIVERED", "FAILED"] | None = None,
    event_id: str | None = Query(default=None, pattern=r"^evt_[0-9a-f]{32}$"),
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> WebhookDeliveryList:
    """Newest first."""
    endpoint = await _endpoint(session, webhook_id, caller)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if state is not None:
        query = query.where(WebhookDelivery.state == state)
    if event_id is not None:
        query = query.where(WebhookDelivery.event_id == event_id)
    rows = (await session.exec(query.order_by(col(WebhookDelivery.created_at).desc(), col(WebhookDelivery.id)).offset(offset).limit(limit))).all()
    return WebhookDeliveryList(items=[_delivery(r) for r in rows])
