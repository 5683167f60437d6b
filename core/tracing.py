"""OpenTelemetry traces, off by default (CUSTODY_TRACING=true turns them on): one trace from the
API request (FastAPI's own server span, made once a tracer provider is installed) through the
workflow it starts to each activity, by temporalio's OpenTelemetry interceptor (context carried
in Temporal headers; workflow spans are replay-safe). Spans go to the OTLP/HTTP endpoint of the
standard OTEL_EXPORTER_OTLP_* variables."""

from __future__ import annotations

from typing import Any

from core.settings import Settings


def configure_tracing(settings: Settings, service_name: str) -> None:
    """Process start (API, worker): the global tracer provider exporting over OTLP/HTTP. Does
    nothing when tracing is off, or when a provider is installed already (tests, an agent)."""
    if not settings.tracing:
        return
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def tracing_interceptors(settings: Settings) -> list[Any]:
    """Temporal client and worker interceptors: temporalio's TracingInterceptor when tracing is on."""
    if not settings.tracing:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]
