"""OpenTelemetry traces (CUSTODY_TRACING): one trace from the API request through the workflow it
starts to each activity, collected by an in-memory exporter; no workflow or activity spans when
tracing is off (the default; and without CUSTODY_TRACING custody installs no tracer provider, so
FastAPI makes no request spans either)."""

from __future__ import annotations

import pytest

from core.settings import Settings
from core.temporal import client_over
from core.tracing import tracing_interceptors
from tests.conftest import api_client, create_wallet, fund, random_address, wait_for_status, withdraw

# A happy-path withdrawal on the suite's one-block-final anvil: the send step sees it final, so no
# await_confirmation (final-in-send-step).
STEPS = ("validate_and_decide_withdrawal", "reserve_funds", "sign_and_broadcast_transfer", "finish_withdrawal")


@pytest.fixture(scope="module")
def spans():  # type: ignore[no-untyped-def]
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "tracing": True})


@pytest.fixture
def client(temporal_env, settings):  # type: ignore[no-untyped-def]
    return client_over(temporal_env.client.service_client, settings)  # with the tracing interceptor


def test_tracing_is_off_by_default() -> None:
    assert Settings().tracing is False and tracing_interceptors(Settings()) == []


async def test_one_trace_from_the_request_through_the_workflow_to_each_activity(api, spans) -> None:  # type: ignore[no-untyped-def]
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    spans.clear()
    accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
    assert (await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"}))["status"] == "COMPLETED"

    finished = spans.get_finished_spans()
    request = next(s for s in finished if s.name == "POST /v1/withdrawals")
    trace_of = [s for s in finished if s.context.trace_id == request.context.trace_id]
    names = {s.name for s in trace_of}
    assert "StartWorkflow:WithdrawalWorkflow" in names and "RunWorkflow:WithdrawalWorkflow" in names, names
    for step in STEPS:
        assert f"RunActivity:{step}" in names, (step, names)
    by_id = {s.context.span_id: s for s in trace_of}

    def ancestors(span):  # type: ignore[no-untyped-def]
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            yield span.name

    start = next(s for s in trace_of if s.name == "StartWorkflow:WithdrawalWorkflow")
    assert request.name in list(ancestors(start)), list(ancestors(start))
    sign = next(s for s in trace_of if s.name == "RunActivity:sign_and_broadcast_transfer")
    assert "StartWorkflow:WithdrawalWorkflow" in list(ancestors(sign)), list(ancestors(sign))
    assert request.attributes["http.route"] == "/v1/withdrawals" and request.attributes["http.response.status_code"] == 202


def test_configure_tracing_installs_nothing_when_off() -> None:
    from opentelemetry import trace

    from core.tracing import configure_tracing

    before = trace.get_tracer_provider()
    configure_tracing(Settings(), "custody-api")
    assert trace.get_tracer_provider() is before


async def test_no_workflow_spans_when_tracing_is_off(base_settings, temporal_env, task_queue, sessions, spans) -> None:  # type: ignore[no-untyped-def]
    from worker import build_worker

    settings = base_settings.model_copy(update={"task_queue": task_queue})
    client = client_over(temporal_env.client.service_client, settings)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await fund(api, wallet, "1")
        spans.clear()
        accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
        assert (await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"}))["status"] == "COMPLETED"
    temporal = [s.name for s in spans.get_finished_spans() if s.name.split(":")[0] in ("StartWorkflow", "RunWorkflow", "RunActivity")]
    assert temporal == []
