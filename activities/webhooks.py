"""Webhook activities: the dispatcher's (outbox rows -> delivery rows -> delivery workflows) and
each delivery's (plan, one signed POST per attempt, give up).

Exactly one delivery per (event, endpoint), whatever crashes where:
1. `claim_webhook_events` turns outbox rows into delivery rows and marks the rows dispatched in
   one transaction (`FOR UPDATE SKIP LOCKED`; a unique index on (event, endpoint) refuses a second
   delivery even from a concurrent or zombie dispatcher).
2. `start_webhook_deliveries` starts `webhook-delivery-<delivery id>` for every delivery not yet
   started (redeliveries the API inserted included), with REJECT_DUPLICATE: a start repeated
   after a crash finds the workflow and goes on; `started_at` is set only afterwards.
Each attempt is recorded under (delivery, attempt number): a retried attempt activity whose POST
was already recorded returns that record instead of posting again. A POST whose answer was lost
with the worker is posted again with the same event id (receivers dedupe on `X-Custody-Event-Id`).

Secrets: a delivery's secret is opened (signers/secret_box.py) inside the attempt, used for the
HMAC and dropped; it never enters a workflow payload, an error or a log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, func, select
from temporalio import activity
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core import metrics
from core.errors import CustodyError, SigningFailed, WebhookDeliveryNotFound
from core.money import to_decimal_string
from core.receiver_urls import ReceiverRefused, pin_receiver
from core.redaction import redact
from core.settings import Settings
from core.webhook_signature import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from db.engine import SessionFactory
from models.db import utcnow
from models.payloads import (
    WebhookAttemptInput,
    WebhookAttemptResult,
    WebhookClaimResult,
    WebhookDeliveryPlan,
    WebhookDispatcherInput,
    WebhookStartResult,
)
from models.webhooks import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookOutboxEvent
from signers.secret_box import SealedSecret, SecretBox

log = logging.getLogger("custody.webhooks")

CLAIM_BATCH = 200
START_BATCH = 50
DISPATCHER_ACTOR = "system:dispatcher"
DELIVERY_WORKFLOW = "WebhookDeliveryWorkflow"
USER_AGENT = "custody-webhooks/1"


def delivery_workflow_id(delivery_id: str) -> str:
    return f"webhook-delivery-{delivery_id}"


def secret_context(endpoint_id: str) -> str:
    """Bound into the sealed secret: it opens only for its own endpoint row."""
    return f"webhook-endpoint:{endpoint_id}"


def sealed_secret(endpoint: WebhookEndpoint) -> SealedSecret:
    return SealedSecret(
        ciphertext=endpoint.secret_ciphertext,
        nonce=endpoint.secret_nonce,
        wrapped_key=endpoint.secret_wrapped_key,
        kek_id=endpoint.secret_kek_id,
    )


def _outcome(status: int | None, error: str | None) -> str:
    if status is not None:
        return f"{status // 100}xx"
    if error and error.startswith("refused"):
        return "refused"
    return "timeout" if error == "timeout" else "error"


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is ignored: the backoff applies)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class WebhookActivities:
    def __init__(self, sessions: SessionFactory, settings: Settings, secret_box: SecretBox) -> None:
        self._sessions = sessions
        self._settings = settings
        self._hooks = settings.webhooks
        self._box = secret_box
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            # No redirects (a 3xx is a failed attempt: following it would post elsewhere than the
            # checked address), no proxies from the environment (the address is pinned).
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._hooks.request_timeout_seconds),
                follow_redirects=False,
                trust_env=False,
            )
        return self._http

    # --- the dispatcher --------------------------------------------------------------------------
    @activity.defn(name="claim_webhook_events")
    async def claim(self, _: WebhookDispatcherInput) -> WebhookClaimResult:
        """Wait (heartbeating) until there is work, at most `idle_round_seconds`: outbox rows to
        turn into deliveries, or deliveries whose workflow is not started yet."""
        deadline = time.monotonic() + self._hooks.idle_round_seconds
        while True:
            result = await self._claim_batch()
            if result.events or result.unstarted or time.monotonic() >= deadline:
                if not result.events and not result.unstarted:
                    await self._prune_outbox()
                return result
            # A draining worker ends its idle wait at once: the next round runs on a live worker,
            # and a deploy does not sit out its whole grace period behind an empty outbox.
            if activity.is_worker_shutdown():
                return result
            activity.heartbeat()
            try:
                await asyncio.wait_for(activity.wait_for_worker_shutdown(), timeout=self._hooks.poll_interval_seconds)
            except TimeoutError:
                pass

    async def _claim_batch(self) -> WebhookClaimResult:
        result = WebhookClaimResult()
        async with self._sessions() as session, session.begin():
            rows = (
                await session.exec(
                    select(WebhookOutboxEvent)
                    .where(col(WebhookOutboxEvent.dispatched_at).is_(None))
                    .order_by(col(WebhookOutboxEvent.id))
                    .limit(CLAIM_BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            now = utcnow()
            if rows:
                owners = {r.owner for r in rows}
                endpoints = (
                    await session.exec(select(WebhookEndpoint).where(col(WebhookEndpoint.owner).in_(owners), WebhookEndpoint.status == "ACTIVE"))
                ).all()
                for row in rows:
                    # An endpoint hears of what happened after it was registered, not before.
                    targets = [e for e in endpoints if e.owner == row.owner and e.wants(row.event_type) and e.created_at <= row.occurred_at]
                    if targets:
                        body = self._body(row)
                        inserted = await session.exec(
                            insert(WebhookDelivery)
                            .values(
                                [
                                    {
                                        "id": str(uuid.uuid4()),
                                        "endpoint_id": e.id,
                                        "owner": row.owner,
                                        "event_id": row.event_id,
                                        "event_type": row.event_type,
                                        "body": body,
                                        "requested_by": DISPATCHER_ACTOR,
                                        "state": "PENDING",
                                        "attempts": 0,
                                        "created_at": now,
                                    }
                                    for e in targets
                                ]
                            )
                            .on_conflict_do_nothing(index_elements=["event_id", "endpoint_id"], index_where=sa.text("redelivery_of IS NULL"))
                        )
                        result.deliveries += inserted.rowcount or 0
                    row.dispatched_at = now
                    session.add(row)
                result.events = len(rows)
            result.unstarted = (
                await session.exec(
                    select(func.count())
                    .select_from(WebhookDelivery)
                    .where(col(WebhookDelivery.started_at).is_(None), WebhookDelivery.state == "PENDING")
                )
            ).one()
        if rows:
            log.info("webhook events dispatched", extra={"events": result.events, "deliveries": result.deliveries})
        return result

    def _body(self, row: WebhookOutboxEvent) -> str:
        """The event as receivers get it: amounts also as decimals in the asset's unit."""
        withdrawal: dict[str, Any] = dict(row.payload.get("withdrawal") or {})
        try:
            chain = self._settings.chain(str(withdrawal.get("chain")))
            withdrawal["amount"] = to_decimal_string(int(withdrawal["amount_base_units"]), chain.asset(str(withdrawal.get("asset"))).decimals)
            if withdrawal.get("fee_paid_base_units") is not None:
                withdrawal["fee_paid"] = to_decimal_string(int(withdrawal["fee_paid_base_units"]), chain.native_decimals)
        except (CustodyError, KeyError, ValueError):
            pass  # a chain or asset no longer configured: base units only
        event = {
            "id": row.event_id,
            "type": row.event_type,
            "created_at": row.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": {row.object_type: withdrawal, "detail": row.payload.get("detail") or {}},
        }
        return json.dumps(event, separators=(",", ":"), sort_keys=True)

    async def _prune_outbox(self) -> None:
        """Dispatched rows past the retention: their deliveries hold what was sent."""
        cutoff = utcnow() - timedelta(days=self._hooks.outbox_retention_days)
        async with self._sessions() as session, session.begin():
            old = select(WebhookOutboxEvent.id).where(col(WebhookOutboxEvent.dispatched_at) < cutoff).limit(1000)
            await session.exec(sa.delete(WebhookOutboxEvent).where(col(WebhookOutboxEvent.id).in_(old.scalar_subquery())))

    @activity.defn(name="start_webhook_deliveries")
    async def start(self, _: WebhookDispatcherInput) -> WebhookStartResult:
        """One WebhookDeliveryWorkflow per delivery not started yet, on this worker's task queue."""
        client = activity.client()
        task_queue = activity.info().task_queue
        result = WebhookStartResult()
        while True:
            async with self._sessions() as session:
                ids = list(
                    (
                        await session.exec(
                            select(WebhookDelivery.id)
                            .where(col(WebhookDelivery.started_at).is_(None), WebhookDelivery.state == "PENDING")
                            .order_by(col(WebhookDelivery.created_at))
                            .limit(START_BATCH)
                        )
                    ).all()
                )
            if not ids:
                return result

            async def start_one(delivery_id: str) -> bool:
                try:
                    await client.start_workflow(
                        DELIVERY_WORKFLOW,
                        delivery_id,
                        id=delivery_workflow_id(delivery_id),
                        task_queue=task_queue,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    )
                    return True
                except WorkflowAlreadyStartedError:
                    return False

            started = await asyncio.gather(*(start_one(i) for i in ids))
            result.started += sum(started)
            result.already_started += len(started) - sum(started)
            async with self._sessions() as session, session.begin():
                await session.exec(
                    sa.update(WebhookDelivery)
                    .where(col(WebhookDelivery.id).in_(ids), col(WebhookDelivery.started_at).is_(None))
                    .values(started_at=utcnow())
                )
            activity.heartbeat(result.started)

    # --- one delivery ----------------------------------------------------------------------------
    @activity.defn(name="begin_webhook_delivery")
    async def begin(self, delivery_id: str) -> WebhookDeliveryPlan:
        """The delivery's state and retry plan; fixes its deadline (the retry period from when the
        delivery was made) the first time."""
        async with self._sessions() as session, session.begin():
            delivery = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if delivery is None:
                raise WebhookDeliveryNotFound("no such webhook delivery", delivery_id=delivery_id)
            if delivery.started_at is None:
                delivery.started_at = utcnow()
            if delivery.deadline_at is None:
                delivery.deadline_at = delivery.created_at + timedelta(seconds=self._hooks.retry_period_seconds)
            session.add(delivery)
            return WebhookDeliveryPlan(
                delivery_id=delivery.id,
                state=delivery.state,
                attempts=delivery.attempts,
                deadline=delivery.deadline_at.timestamp(),
                first_retry_seconds=self._hooks.first_retry_seconds,
                max_retry_interval_seconds=self._hooks.max_retry_interval_seconds,
                request_timeout_seconds=self._hooks.request_timeout_seconds,
            )

    @activity.defn(name="attempt_webhook_delivery")
    async def attempt(self, request: WebhookAttemptInput) -> WebhookAttemptResult:
        """POST the event once, signed, to the endpoint's checked address; record the attempt."""
        async with self._sessions() as session:
            delivery = await session.get(WebhookDelivery, request.delivery_id)
            if delivery is None:
                raise WebhookDeliveryNotFound("no such webhook delivery", delivery_id=request.delivery_id)
            endpoint = await session.get(WebhookEndpoint, delivery.endpoint_id)
            done = (
                await session.exec(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery.id, WebhookAttempt.number == request.number))
            ).first()
        if done is not None:  # this attempt was made and recorded by an earlier try of this activity
            return self._result(request.number, delivery.state, done.status_code, None)
        if delivery.state != "PENDING":
            return self._result(request.number, delivery.state, delivery.last_status_code, None)
        if endpoint is None or endpoint.status != "ACTIVE":
            await self._finish(delivery.id, "FAILED", "the endpoint was deleted")
            return WebhookAttemptResult(number=request.number, delivered=False, final=True)
        if request.number > 1 and delivery.deadline_at is not None and utcnow() > delivery.deadline_at:
            # Scheduled in time but started late (a busy worker): the period is over, post nothing.
            await self._finish(delivery.id, "FAILED", None)
            return WebhookAttemptResult(number=request.number, delivered=False, final=True)

        body = delivery.body.encode()
        timestamp = int(time.time())
        try:
            secret = (await self._box.open(sealed_secret(endpoint), secret_context(endpoint.id))).decode()
        except SigningFailed:  # another KEK, or an altered row: no retry can open it (a KMS outage is retried)
            await self._finish(delivery.id, "FAILED", "the endpoint's secret does not open with the configured key-encryption key")
            return WebhookAttemptResult(number=request.number, delivered=False, final=True)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: signature(secret, timestamp, body),
            TIMESTAMP_HEADER: str(timestamp),
            EVENT_ID_HEADER: delivery.event_id,
            EVENT_TYPE_HEADER: delivery.event_type,
            DELIVERY_ID_HEADER: delivery.id,
        }
        del secret
        status, error, retry_after = None, None, None
        sent_at, started = utcnow(), time.perf_counter()
        try:
            pinned = await pin_receiver(endpoint.url, allow_local=self._settings.webhook_local_receivers_allowed)
            extensions = {"sni_hostname": pinned.sni_hostname} if pinned.sni_hostname else {}
            request_headers = {**headers, "Host": pinned.host_header}
            async with self._client().stream("POST", pinned.url, content=body, headers=request_headers, extensions=extensions) as response:
                status = response.status_code  # the answer's body is never read: only its status counts
                retry_after = _retry_after(response.headers.get("retry-after"))
        except ReceiverRefused as e:
            error = f"refused: {e}"
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as e:
            error = redact(f"{type(e).__name__}: {e}")[:300]
        elapsed = time.perf_counter() - started
        delivered = status is not None and 200 <= status < 300
        metrics.WEBHOOK_ATTEMPTS.labels(outcome=_outcome(status, error)).inc()
        metrics.WEBHOOK_ATTEMPT_SECONDS.observe(elapsed)

        async with self._sessions() as session, session.begin():
            await session.exec(
                insert(WebhookAttempt)
                .values(
                    delivery_id=delivery.id,
                    number=request.number,
                    at=sent_at,
                    status_code=status,
                    latency_ms=int(elapsed * 1000),
                    error=error,
                )
                .on_conflict_do_nothing(index_elements=["delivery_id", "number"])
            )
            row = await session.get(WebhookDelivery, delivery.id, with_for_update=True)
            assert row is not None
            row.attempts = max(row.attempts, request.number)
            row.last_status_code, row.last_error = status, error
            newly_delivered = delivered and row.state == "PENDING"
            if newly_delivered:
                row.state, row.finished_at = "DELIVERED", utcnow()
            session.add(row)
        if newly_delivered:
            metrics.WEBHOOK_DELIVERIES.labels(result="delivered").inc()
        activity.logger.info(
            "webhook attempt",
            extra={"delivery_id": delivery.id, "event_id": delivery.event_id, "attempt": request.number, "status_code": status, "error": error},
        )
        return WebhookAttemptResult(number=request.number, delivered=delivered, final=delivered, status_code=status, retry_after_seconds=retry_after)

    @staticmethod
    def _result(number: int, state: str, status: int | None, retry_after: float | None) -> WebhookAttemptResult:
        return WebhookAttemptResult(
            number=number, delivered=state == "DELIVERED", final=state != "PENDING", status_code=status, retry_after_seconds=retry_after
        )

    @activity.defn(name="fail_webhook_delivery")
    async def give_up(self, delivery_id: str) -> None:
        """The retry period is over: FAILED (a redelivery can still be asked for)."""
        await self._finish(delivery_id, "FAILED", None)

    async def _finish(self, delivery_id: str, state: str, error: str | None) -> None:
        async with self._sessions() as session, session.begin():
            ended = await session.exec(
                sa.update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == delivery_id, col(WebhookDelivery.state) == "PENDING")
                .values(state=state, finished_at=utcnow(), **({"last_error": error} if error else {}))
            )
        if ended.rowcount:
            metrics.WEBHOOK_DELIVERIES.labels(result=state.lower()).inc()
            log.warning("webhook delivery %s", state.lower(), extra={"delivery_id": delivery_id, "reason": error or "retry period over"})
