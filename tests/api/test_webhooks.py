"""Webhooks against a real receiver (an aiohttp server in the test) that fails the first attempts:
each withdrawal status change is delivered once it recovers, signed so that the README's five
lines verify it; retries stop after the period (FAILED) and a redelivery (CLI) posts the same
event again; secrets appear in no answer, log line or column; one delivery per status change
when the worker is killed between making deliveries and starting them; receivers that resolve
to forbidden addresses get nothing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict
from sqlmodel import col, select
from temporalio.client import Client, WorkflowExecutionStatus

from core import metrics
from core.errors import InvalidWebhookUrl, SigningFailed
from core.identity import Role
from core.receiver_urls import ReceiverRefused, check_receiver_url, pin_receiver
from core.settings import AwsKmsSettings, Settings, WebhookSettings
from core.webhook_signature import verify
from db.gauges import sample_webhook_outbox
from devnet.local import free_port
from models.db import utcnow
from models.payloads import WebhookDeliveryResult
from models.webhooks import WITHDRAWAL_EVENTS, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookOutboxEvent
from signers.kek import LocalAesGcmKek, kek_from_settings
from signers.secret_box import SecretBox
from tests.conftest import (
    api_client,
    create_wallet,
    custody,
    fund,
    new_identity,
    random_address,
    replay_and_record,
    serve_api,
    until,
    wait_exit,
    wait_for_status,
    withdraw,
    worker_process,
)
from worker import build_worker, ensure_webhook_dispatcher

README = Path(__file__).resolve().parents[2] / "README.md"
# What one completed withdrawal announces, in order.
LIFECYCLE = ["withdrawal.validating", "withdrawal.signing", "withdrawal.broadcasting", "withdrawal.confirming", "withdrawal.completed"]
FAST = dict(first_retry_seconds=0.2, max_retry_interval_seconds=0.5, poll_interval_seconds=0.1, idle_round_seconds=1, allow_local_receivers=True)


@dataclass
class Received:
    path: str
    headers: CIMultiDict
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)


class Receiver:
    """A real HTTP server: per path, a script of status codes to answer first, then `then`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._script: dict[str, list[int]] = {}
        self._then: dict[str, int] = {}
        self.port = 0

    def answer(self, path: str, *first: int, then: int = 200) -> None:
        self._script[path] = list(first)
        self._then[path] = then

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(request.path, CIMultiDict(request.headers), body))
        script = self._script.get(request.path, [])
        status = script.pop(0) if script else self._then.get(request.path, 200)
        return web.Response(status=status, text="ok" if status < 300 else "not now")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hooks = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", hooks._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hooks.port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hooks.port).start()
    yield hooks
    await runner.cleanup()


@pytest.fixture
def settings(base_settings: Settings, task_queue: str) -> Settings:
    return base_settings.model_copy(update={"task_queue": task_queue, "webhooks": WebhookSettings(retry_period_seconds=60, **FAST)})


@pytest.fixture
async def dispatcher(client: Client, settings: Settings, worker) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """The worker's dispatcher, continuing as new every 3 rounds (so a closed run exists)."""
    workflow_id = await ensure_webhook_dispatcher(client, settings, rounds_per_run=3)
    yield workflow_id
    await client.get_workflow_handle(workflow_id).terminate("test over")


@pytest.fixture
async def owner(sessions) -> tuple[dict[str, str], str]:  # type: ignore[no-untyped-def]
    """A user of this test alone: the session's other tests never make events for them."""
    return await new_identity(sessions, Role.USER)


def readme_verify():  # type: ignore[no-untyped-def]
    """The signature check as README's Webhooks section prints it, run as is."""
    block = re.search(r"### Verifying a signature.*?```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README: Webhooks, 'Verifying a signature' code block"
    assert len(block.group(1).strip().splitlines()) <= 6  # the import line and five
    scope: dict = {}
    exec(block.group(1), scope)
    return scope["verify"]


async def register(api, headers: dict, url: str, events: list[str], **extra) -> dict:  # type: ignore[no-untyped-def]
    created = await api.post("/v1/webhooks", json={"url": url, "events": events, **extra}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()


async def deliveries_of(sessions, endpoint_id: str) -> list[WebhookDelivery]:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        rows = await session.exec(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id).order_by(col(WebhookDelivery.created_at)))
        return list(rows.all())


async def completed_withdrawal(api, headers: dict) -> dict:  # type: ignore[no-untyped-def]
    wallet = await create_wallet(api, headers=headers)
    await fund(api, wallet, "1", headers=headers)
    accepted = (await withdraw(api, wallet, random_address(), "0.1", headers=headers)).json()
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"}, headers=headers)
    assert done["status"] == "COMPLETED", done
    return done


async def test_each_status_change_is_delivered_once_signed_after_the_receiver_recovers(api, dispatcher, client, sessions, receiver, owner, caplog):
    caplog.set_level(logging.DEBUG)
    headers, user = owner
    receiver.answer("/all", 500, 500, 503)  # down for the first three posts, then up
    everything = await register(api, headers, receiver.url("/all"), ["*"], description="ops")
    only_final = await register(api, headers, receiver.url("/final"), ["withdrawal.completed", "withdrawal.failed"])
    secret = everything["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40 and only_final["secret"] != secret

    done = await completed_withdrawal(api, headers)

    async def all_delivered() -> list[WebhookDelivery] | None:
        rows = await deliveries_of(sessions, everything["id"])
        return rows if len(rows) == len(LIFECYCLE) and all(r.state == "DELIVERED" for r in rows) else None

    delivered = await until(all_delivered, what="five deliveries DELIVERED")
    # One delivery per status change, in the withdrawal's own order of events.
    statuses = [e["status"] for e in done["history"] if e["status"] not in ("PENDING", "ALERT")]
    assert sorted(r.event_type for r in delivered) == sorted(f"withdrawal.{s.lower()}" for s in statuses) == sorted(LIFECYCLE)
    assert len({r.event_id for r in delivered}) == len(LIFECYCLE)

    # Every post is signed over timestamp.body with the endpoint's secret; README's check agrees.
    posts = receiver.at("/all")
    readme = readme_verify()
    for post in posts:
        assert verify(secret, post.headers["X-Custody-Timestamp"], post.body, post.headers["X-Custody-Signature"])
        assert readme(secret, post.headers, post.body)
        assert not readme(only_final["secret"], post.headers, post.body)
        assert not readme(secret, post.headers, post.body + b" ")
        assert post.headers["X-Custody-Event-Id"] == post.event["id"] and post.headers["X-Custody-Event-Type"] == post.event["type"]
        assert post.event["data"]["withdrawal"]["id"] == done["id"]
        # The withdrawal as it is once the announced change is made (written with the change).
        assert post.event["data"]["withdrawal"]["status"] == post.event["type"].removeprefix("withdrawal.").upper()
    # Recovered: the three failed posts were retried; each event arrived answered 200 once.
    assert len(posts) == len(LIFECYCLE) + 3
    answered = {r.id: r for r in delivered}
    async with sessions() as session:
        attempts = (await session.exec(select(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(list(answered))))).all()
    assert sorted(a.status_code for a in attempts) == [200] * len(LIFECYCLE) + [500, 500, 503]
    assert all(a.latency_ms >= 0 and a.error is None for a in attempts)
    completed = next(p.event for p in posts if p.event["type"] == "withdrawal.completed")
    assert completed["data"]["withdrawal"]["amount"] == "0.1" and completed["data"]["withdrawal"]["tx_hash"] == done["tx_hash"]

    # The other endpoint heard only of what it subscribed to.
    final = await until(lambda: _delivered(sessions, only_final["id"], 1), what="final delivery")
    assert [r.event_type for r in final] == ["withdrawal.completed"] and len(receiver.at("/final")) == 1

    # Delivery history over HTTP, with the attempts; the secret is in no answer but the first.
    retried = next(r for r in delivered if r.attempts > 1)
    detail = (await api.get(f"/v1/webhooks/deliveries/{retried.id}", headers=headers)).json()
    assert detail["state"] == "DELIVERED" and [a["status_code"] for a in detail["history"]][-1] == 200
    assert detail["attempts"] == len(detail["history"]) > 1 and detail["event"]["id"] == retried.event_id
    answers = [
        await api.get("/v1/webhooks", headers=headers),
        await api.get(f"/v1/webhooks/{everything['id']}", headers=headers),
        await api.get(f"/v1/webhooks/{everything['id']}/deliveries", headers=headers),
        await api.get(f"/v1/webhooks/deliveries/{retried.id}", headers=headers),
        await api.get("/v1/webhooks", headers={"Authorization": "Bearer dev-ops-key"}),
        await api.get("/v1/audit", params={"object_id": everything["id"]}, headers={"Authorization": "Bearer dev-admin-key"}),
    ]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert everything["id"] in answers[4].text and "webhook.created" in answers[5].text
    assert all(secret not in a.text and only_final["secret"] not in a.text for a in answers)
    listed = answers[2].json()["items"]
    assert len(listed) == len(LIFECYCLE) and all(d["workflow_id"] == f"webhook-delivery-{d['id']}" for d in listed)
    # ... nor in a log line (worker and API ran in this process), nor stored in the clear.
    logged = caplog.text + "".join(json.dumps(vars(r), default=str) for r in caplog.records)
    assert secret not in logged and only_final["secret"] not in logged
    async with sessions() as session:
        row = await session.get(WebhookEndpoint, everything["id"])
    assert row is not None and all(secret.encode() not in bytes(v) for v in (row.secret_ciphertext, row.secret_nonce, row.secret_wrapped_key))
    assert secret not in json.dumps(row.model_dump(exclude={"secret_ciphertext", "secret_nonce", "secret_wrapped_key"}), default=str)
    # Others see nothing of it.
    stranger, _ = await new_identity(sessions, Role.USER)
    assert (await api.get(f"/v1/webhooks/deliveries/{retried.id}", headers=stranger)).status_code == 404
    assert (await api.get(f"/v1/webhooks/{everything['id']}", headers=stranger)).status_code == 404

    await replay_and_record(client, f"webhook-delivery-{retried.id}", "WebhookDeliveryWorkflow__retried_then_delivered")
    # A dispatcher run (3 rounds, then continued as new) that started delivery workflows.
    run_id = await until(lambda: _run_that_started_deliveries(client, dispatcher), what="a closed dispatcher run with starts")
    await replay_and_record(client, dispatcher, "WebhookDispatcherWorkflow__rounds_then_continued", run_id=run_id)


async def _delivered(sessions, endpoint_id: str, count: int) -> list[WebhookDelivery] | None:  # type: ignore[no-untyped-def]
    rows = await deliveries_of(sessions, endpoint_id)
    return rows if len(rows) == count and all(r.state == "DELIVERED" for r in rows) else None


async def _run_that_started_deliveries(client: Client, workflow_id: str) -> str | None:
    async for run in client.list_workflows(f"WorkflowId = '{workflow_id}' AND ExecutionStatus = 'ContinuedAsNew'"):
        history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
        if "start_webhook_deliveries" in history.to_json():
            return run.run_id
    return None


@pytest.fixture
def short_period(base_settings: Settings, task_queue: str) -> Settings:
    return base_settings.model_copy(update={"task_queue": task_queue, "webhooks": WebhookSettings(retry_period_seconds=6, **FAST)})


async def test_retries_stop_after_the_period_and_a_redelivery_posts_the_same_event(short_period, client, sessions, receiver, owner, caplog):
    caplog.set_level(logging.DEBUG)
    headers, _ = owner
    settings = short_period
    receiver.answer("/down", then=503)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api, serve_api(settings, client) as url:
        workflow_id = await ensure_webhook_dispatcher(client, settings)
        try:
            hook = await register(api, headers, receiver.url("/down"), ["withdrawal.completed"])
            await completed_withdrawal(api, headers)
            [failed] = await until(lambda: _in_state(sessions, hook["id"], "FAILED"), what="delivery FAILED")

            # Retried with backoff until the period ended, then no more: the workflow is done.
            result = await client.get_workflow_handle(f"webhook-delivery-{failed.id}", result_type=WebhookDeliveryResult).result()
            # Retried at least once: how many attempts fit in the 6 s period depends on how busy
            # the box is (each is an activity and a POST), which is not what this test is about.
            assert result.state == "FAILED" and failed.attempts >= 2
            posts = receiver.at("/down")
            assert len(posts) == failed.attempts and len({p.headers["X-Custody-Event-Id"] for p in posts}) == 1
            assert failed.finished_at is not None and failed.deadline_at is not None and failed.last_status_code == 503
            async with sessions() as session:
                sent = (await session.exec(select(WebhookAttempt.at).where(WebhookAttempt.delivery_id == failed.id))).all()
            assert len(sent) == len(posts) and max(sent) <= failed.deadline_at  # none posted after the period
            await replay_and_record(client, f"webhook-delivery-{failed.id}", "WebhookDeliveryWorkflow__failed_after_period")

            # Redeliver through the CLI: a new delivery of the same event, posted when it is up again.
            code, out, err = await custody(url, "webhooks", "redeliver", failed.id, key=headers["Authorization"].split()[1])
            assert code == 0, err
            again_id = re.search(r"as delivery ([0-9a-f-]{36})", out).group(1)  # type: ignore[union-attr]
            twice = await api.post(f"/v1/webhooks/deliveries/{failed.id}/redeliver", headers=headers)
            assert twice.status_code == 409 and twice.json()["error"]["code"] == "WEBHOOK_DELIVERY_IN_PROGRESS"
            receiver.answer("/down", then=200)
            redelivered = await until(lambda: _delivery_in(sessions, again_id, "DELIVERED"), what="redelivery DELIVERED")
            assert redelivered.redelivery_of == failed.id and redelivered.event_id == failed.event_id
            last = receiver.at("/down")[-1]
            assert last.body == posts[0].body and verify(
                hook["secret"], last.headers["X-Custody-Timestamp"], last.body, last.headers["X-Custody-Signature"]
            )
            code, out, _ = await custody(url, "webhooks", "deliveries", hook["id"], key=headers["Authorization"].split()[1])
            assert code == 0 and again_id in out and failed.id in out and "DELIVERED" in out and "FAILED" in out
            assert hook["secret"] not in caplog.text
        finally:
            await client.get_workflow_handle(workflow_id).terminate("test over")


async def _in_state(sessions, endpoint_id: str, state: str) -> list[WebhookDelivery] | None:  # type: ignore[no-untyped-def]
    rows = await deliveries_of(sessions, endpoint_id)
    return rows if rows and all(r.state == state for r in rows) else None


async def _delivery_in(sessions, delivery_id: str, state: str) -> WebhookDelivery | None:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        row = await session.get(WebhookDelivery, delivery_id)
    return row if row is not None and row.state == state else None


async def test_one_delivery_per_status_change_when_the_worker_dies_mid_dispatch(settings, client, sessions, receiver, owner, monkeypatch):
    """The first worker exits right after a dispatch round committed the deliveries, before
    Temporal heard of the round and before any delivery workflow was started."""
    headers, _ = owner
    receiver.answer("/crash")
    for name, value in settings.webhooks.model_dump().items():
        monkeypatch.setenv(f"CUSTODY_WEBHOOKS__{name.upper()}", str(value).lower() if isinstance(value, bool) else str(value))
    async with build_worker(client, settings, sessions):
        # Nothing from the rest of the session left to dispatch, so the first round is ours.
        drain = await ensure_webhook_dispatcher(client, settings)
        await until(lambda: _outbox_empty(sessions), what="outbox drained")
        await client.get_workflow_handle(drain).terminate("drained")
    # This worker has stopped: no round of the drained dispatcher is still claiming.
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        hook = await register(api, headers, receiver.url("/crash"), ["*"])
        done = await completed_withdrawal(api, headers)  # no dispatcher: the events wait in the outbox
    assert not await deliveries_of(sessions, hook["id"])

    crashing = worker_process(settings, chaos_after="claim_webhook_events")
    restarted = None
    try:
        assert await wait_exit(crashing, timeout=90) == 137
        made = await deliveries_of(sessions, hook["id"])
        assert len(made) == len(LIFECYCLE) and all(d.started_at is None for d in made) and receiver.at("/crash") == []

        restarted = worker_process(settings)
        delivered = await until(lambda: _delivered(sessions, hook["id"], len(LIFECYCLE)), timeout=120, what="deliveries after restart")
        assert sorted(d.id for d in delivered) == sorted(d.id for d in made)
        posts = receiver.at("/crash")
        assert sorted(p.event["type"] for p in posts) == sorted(LIFECYCLE) and len({p.event["id"] for p in posts}) == len(LIFECYCLE)
        assert {p.event["data"]["withdrawal"]["id"] for p in posts} == {done["id"]}
        for d in delivered:
            # The row says DELIVERED a moment before its workflow returns: wait for the return.
            handle = client.get_workflow_handle(f"webhook-delivery-{d.id}")
            await asyncio.wait_for(handle.result(), timeout=60)
            assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
    finally:
        for process in (crashing, restarted):
            if process is not None and process.poll() is None:
                process.terminate()
                await wait_exit(process, timeout=60)
        await client.get_workflow_handle(f"webhook-dispatcher-{settings.task_queue}").terminate("test over")


async def _outbox_empty(sessions) -> bool:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        left = (await session.exec(select(WebhookOutboxEvent.id).where(col(WebhookOutboxEvent.dispatched_at).is_(None)).limit(1))).first()
        unstarted = (
            await session.exec(
                select(WebhookDelivery.id).where(col(WebhookDelivery.started_at).is_(None), WebhookDelivery.state == "PENDING").limit(1)
            )
        ).first()
    return left is None and unstarted is None


async def _outbox_event(sessions, owner: str, event_type: str = "withdrawal.completed", occurred_at: datetime | None = None) -> str:  # type: ignore[no-untyped-def]
    """An event as record_status would write it (for tests of the delivery side alone)."""
    event_id = f"evt_{uuid.uuid4().hex}"
    async with sessions() as session, session.begin():
        session.add(
            WebhookOutboxEvent(
                event_id=event_id,
                event_type=event_type,
                owner=owner,
                object_type="withdrawal",
                object_id=str(uuid.uuid4()),
                payload={"withdrawal": {"id": "w", "chain": "anvil", "asset": "ETH", "amount_base_units": "5"}},
                occurred_at=occurred_at or utcnow(),
            )
        )
    return event_id


async def test_receivers_resolving_to_forbidden_addresses_and_deleted_endpoints_get_nothing(
    base_settings, task_queue, client, sessions, receiver, owner
):
    headers, user = owner
    settings = base_settings.model_copy(update={"task_queue": task_queue, "webhooks": WebhookSettings(**{**FAST, "allow_local_receivers": False})})
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        workflow_id = await ensure_webhook_dispatcher(client, settings)
        try:
            local = await api.post("/v1/webhooks", json={"url": receiver.url("/local"), "events": ["*"]}, headers=headers)
            assert local.status_code == 422 and "loopback" in local.json()["error"]["message"]
            # 127.0.0.1 in disguise: no address literal Python knows, so registration takes it;
            # it resolves to loopback when the worker is about to post, and nothing is posted.
            local = await register(api, headers, f"http://2130706433:{receiver.port}/local", ["*"])
            await _outbox_event(sessions, user)
            [refused] = await until(lambda: _attempted(sessions, local["id"], 2), what="refused attempts")
            async with sessions() as session:
                tries = (await session.exec(select(WebhookAttempt).where(WebhookAttempt.delivery_id == refused.id))).all()
            assert all(t.status_code is None and (t.error or "").startswith("refused: ") for t in tries), [t.error for t in tries]
            assert receiver.at("/local") == []
            deleted = await api.delete(f"/v1/webhooks/{local['id']}", headers=headers)
            assert deleted.status_code == 200 and deleted.json()["status"] == "DELETED"
            [ended] = await until(lambda: _in_state(sessions, local["id"], "FAILED"), what="deleted endpoint's delivery FAILED")
            assert ended.last_error == "the endpoint was deleted"
            assert local["id"] not in (await api.get("/v1/webhooks", headers=headers)).text
            assert (await api.post(f"/v1/webhooks/deliveries/{ended.id}/redeliver", headers=headers)).status_code == 404

            refusals = [
                ("ftp://example.com/x", "only http and https"),
                ("http://169.254.169.254/latest/meta-data/", "metadata"),
                ("http://[::ffff:169.254.169.254]/", "metadata"),
                ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
                ("https://user:pass@example.com/", "credentials"),
                ("http:///nohost", "no host"),
            ]
            for url, reason in refusals:
                answer = await api.post("/v1/webhooks", json={"url": url, "events": ["*"]}, headers=headers)
                assert answer.status_code == 422 and answer.json()["error"]["code"] == "INVALID_WEBHOOK_URL", (url, answer.text)
                assert reason in answer.json()["error"]["message"], (url, answer.text)
            unknown = await api.post("/v1/webhooks", json={"url": "https://example.com/", "events": ["wallet.created"]}, headers=headers)
            assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "VALIDATION_ERROR"
        finally:
            await client.get_workflow_handle(workflow_id).terminate("test over")


async def _attempted(sessions, endpoint_id: str, attempts: int) -> list[WebhookDelivery] | None:  # type: ignore[no-untyped-def]
    rows = await deliveries_of(sessions, endpoint_id)
    return rows if len(rows) == 1 and rows[0].attempts >= attempts else None


async def test_receiver_url_rules():
    for url in ("http://127.0.0.1:8080/hook", "http://10.1.2.3/", "http://localhost/x", "http://[::1]/"):
        with pytest.raises(InvalidWebhookUrl):
            check_receiver_url(url, allow_local=False)
        assert check_receiver_url(url, allow_local=True)
    for url in ("http://169.254.169.254/", "http://[fe80::1]/", "http://[fd00:ec2::254]/", "http://100.100.100.200/", "http://0.0.0.0/"):
        with pytest.raises(InvalidWebhookUrl):
            check_receiver_url(url, allow_local=True)  # never, whatever the setting
    assert check_receiver_url("https://hooks.example.com", allow_local=False) == "https://hooks.example.com/"
    pinned = await pin_receiver("https://93.184.215.14:8443/in?x=1", allow_local=False)
    assert (pinned.url, pinned.host_header, pinned.sni_hostname) == ("https://93.184.215.14:8443/in?x=1", "93.184.215.14:8443", None)
    with pytest.raises(ReceiverRefused, match="loopback"):
        await pin_receiver("http://localhost:9/x", allow_local=False)
    with pytest.raises(ReceiverRefused, match="resolves to a loopback"):
        await pin_receiver("http://2130706433:9/x", allow_local=False)
    pinned = await pin_receiver("http://localhost:9/x", allow_local=True)
    assert pinned.url in ("http://127.0.0.1:9/x", "http://[::1]:9/x") and pinned.host_header == "localhost:9"
    assert set(WITHDRAWAL_EVENTS) == {*LIFECYCLE, "withdrawal.awaiting_approval", "withdrawal.failed", "withdrawal.cancelled", "withdrawal.alert"}


async def test_the_worker_samples_how_long_webhook_events_wait(sessions):
    """The lag gauge comes from PostgreSQL, so it grows even when no dispatcher runs at all."""
    event_id = await _outbox_event(sessions, f"nobody-{uuid.uuid4().hex[:6]}", occurred_at=utcnow() - timedelta(hours=1))
    try:
        await sample_webhook_outbox(sessions)
        assert metrics.WEBHOOK_OUTBOX_LAG_SECONDS._value.get() >= 3600  # type: ignore[attr-defined]
    finally:
        async with sessions() as session, session.begin():
            row = (await session.exec(select(WebhookOutboxEvent).where(WebhookOutboxEvent.event_id == event_id))).one()
            row.dispatched_at = utcnow()
            session.add(row)


async def test_webhook_secrets_are_sealed_with_the_keystore_kek_local_or_kms(aws_server):
    secret, context = b"whsec_" + uuid.uuid4().hex.encode(), "webhook-endpoint:one"
    local = SecretBox(kek_from_settings(Settings(environment="test")))
    sealed = await local.seal(secret, context)
    assert await local.open(sealed, context) == secret
    assert secret not in sealed.ciphertext + sealed.wrapped_key + sealed.nonce
    with pytest.raises(SigningFailed):
        await local.open(sealed, "webhook-endpoint:two")  # copied onto another endpoint's row
    with pytest.raises(SigningFailed):
        await SecretBox(LocalAesGcmKek(os.urandom(32), "local-kek-1")).open(sealed, context)  # another KEK

    key = aws_server.client("kms").create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
    kms_kek = kek_from_settings(
        Settings(
            environment="test",
            keystore_kek=f"aws-kms:{key['KeyId']}",
            keystore_kek_id="aws-kek-webhooks",
            aws_kms=AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url),
        )
    )
    try:
        kms = SecretBox(kms_kek)
        sealed = await kms.seal(secret, context)
        assert sealed.kek_id == "aws-kek-webhooks" and await kms.open(sealed, context) == secret
        with pytest.raises(SigningFailed):
            await kms.open(sealed, "webhook-endpoint:two")
    finally:
        kms_kek.close()  # type: ignore[attr-defined]
