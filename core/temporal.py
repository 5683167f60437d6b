"""One way to reach Temporal, with payload encryption, for every entry point."""

from __future__ import annotations

from temporalio.client import Client, RPCTimeoutOrCancelledError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode, ServiceClient

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


# Answers that say nothing about the workflow, only that Temporal could not be asked now.
_UNREACHABLE = frozenset({
    RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED,
    RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.ABORTED, RPCStatusCode.UNKNOWN, RPCStatusCode.INTERNAL,
})


def temporal_unreachable(error: BaseException) -> bool:
    """True when a client call failed because Temporal did not answer (restarting, down, timed
    out), so the call may or may not have taken effect: the caller should try again."""
    if isinstance(error, RPCTimeoutOrCancelledError):
        return True
    return isinstance(error, RPCError) and error.status in _UNREACHABLE
