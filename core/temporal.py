"""One way to reach Temporal, with payload encryption, for every entry point."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from temporalio.api.errordetails.v1 import WorkflowNotReadyFailure
from temporalio.client import Client, RPCTimeoutOrCancelledError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode, ServiceClient, TLSConfig

from core.codec import codec_from_settings, data_converter
from core.settings import Settings
from core.tracing import tracing_interceptors

log = logging.getLogger(__name__)

# A Temporal frontend that was just started (a dev server, a restarted cluster node) accepts
# connections before it serves: for a moment its GetSystemInfo answers Unavailable "Frontend is
# not healthy yet". Connecting waits that out, this long at most; any other failure is raised.
NOT_HEALTHY_PATIENCE_SECONDS = 60.0


def _not_healthy_yet(error: RuntimeError) -> bool:
    # temporalio's bridge raises a RuntimeError carrying the gRPC status as text.
    return "code: Unavailable" in str(error) and "not healthy yet" in str(error)


def custody_data_converter(settings: Settings, *, refuse_plaintext: bool = False):  # type: ignore[no-untyped-def]
    return data_converter(codec_from_settings(settings, refuse_plaintext=refuse_plaintext))


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS (mTLS with a client certificate and key) to the frontend; False: plaintext."""
    tls = settings.temporal_tls
    if tls is None:
        return False

    def read(path: str | None) -> bytes | None:
        return Path(path).read_bytes() if path else None

    if bool(tls.client_cert_path) != bool(tls.client_private_key_path):
        raise ValueError("CUSTODY_TEMPORAL_TLS: give client_cert_path and client_private_key_path together (mTLS)")
    return TLSConfig(
        server_root_ca_cert=read(tls.server_root_ca_cert_path),
        client_cert=read(tls.client_cert_path),
        client_private_key=read(tls.client_private_key_path),
        domain=tls.domain,
    )


async def connect_temporal(settings: Settings, runtime: Runtime | None = None) -> Client:
    api_key = settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None
    deadline = time.monotonic() + NOT_HEALTHY_PATIENCE_SECONDS
    while True:
        try:
            return await Client.connect(
                settings.temporal_address,
                namespace=settings.temporal_namespace,
                data_converter=custody_data_converter(settings),
                runtime=runtime,
                tls=tls_config(settings),
                api_key=api_key or None,
                interceptors=tracing_interceptors(settings),  # none unless CUSTODY_TRACING
            )
        except RuntimeError as e:
            if not _not_healthy_yet(e) or time.monotonic() >= deadline:
                raise
            log.info("Temporal frontend not healthy yet: connecting again", extra={"temporal_address": settings.temporal_address})
            await asyncio.sleep(0.25)


def worker_client(client: Client, settings: Settings) -> Client:
    """The worker's view of `client`'s connection: the same, except that payloads not sealed
    with custody's keys are refused (core.codec.EncryptionCodec, refuse_plaintext)."""
    return Client(
        client.service_client,
        namespace=client.namespace,
        data_converter=custody_data_converter(settings, refuse_plaintext=True),
    )


def metrics_runtime(port: int) -> Runtime:
    """A Temporal runtime exporting the SDK's own metrics on 127.0.0.1:<port>/metrics."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}")))


def client_over(service_client: ServiceClient, settings: Settings) -> Client:
    """A custody client sharing an existing connection (tests, embedded servers)."""
    return Client(
        service_client,
        namespace=settings.temporal_namespace,
        data_converter=custody_data_converter(settings),
        interceptors=tracing_interceptors(settings),
    )


# Answers that say nothing about the workflow, only that Temporal could not be asked now.
_UNREACHABLE = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
    }
)


def temporal_unreachable(error: BaseException) -> bool:
    """True when a client call failed because Temporal did not answer (restarting, down, timed
    out), so the call may or may not have taken effect: the caller should try again."""
    if isinstance(error, RPCTimeoutOrCancelledError):
        return True
    return isinstance(error, RPCError) and error.status in _UNREACHABLE


def workflow_not_ready(error: BaseException) -> bool:
    """True when the workflow runs but cannot take an update now: its last workflow task failed
    or timed out (a worker died in the middle of it) and the server is retrying it. Nothing was
    delivered; the same request succeeds once a worker completes that task."""
    if not isinstance(error, RPCError) or error.status != RPCStatusCode.FAILED_PRECONDITION:
        return False
    if any(detail.Is(WorkflowNotReadyFailure.DESCRIPTOR) for detail in error.grpc_status.details):
        return True
    return "workflow task in failed state" in error.message.lower()
