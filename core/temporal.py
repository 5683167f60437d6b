"""One way to reach Temporal, with payload encryption, for every entry point."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import ServiceClient

from core.codec import codec_from_settings, data_converter
from core.settings import Settings


def custody_data_converter(settings: Settings):  # type: ignore[no-untyped-def]
    return data_converter(codec_from_settings(settings))


async def connect_temporal(settings: Settings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=custody_data_converter(settings),
        runtime=runtime,
    )


def metrics_runtime(port: int) -> Runtime:
    """A Temporal runtime exporting the SDK's own metrics on 127.0.0.1:<port>/metrics."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))


def client_over(service_client: ServiceClient, settings: Settings) -> Client:
    """A custody client sharing an existing connection (tests, embedded servers)."""
    return Client(service_client, namespace=settings.temporal_namespace, data_converter=custody_data_converter(settings))
