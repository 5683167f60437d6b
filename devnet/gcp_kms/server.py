"""gRPC (grpc.aio) server exposing :class:`devnet.gcp_kms.service.KmsState` as
``google.cloud.kms.v1.KeyManagementService``, plus fault injection.

google-cloud-kms ships proto-plus types but no servicer base class, so the methods are
registered as generic handlers using the proto-plus ``serialize``/``deserialize``.
Methods that are not implemented answer UNIMPLEMENTED (gRPC's default).

Fault injection (in process: ``srv.set_faults(...)``; over the wire: the
``custody.devnet.v1.DevnetControl`` service, see :mod:`devnet.gcp_kms.client`)::

    {"AsymmetricSign": {"code": "UNAVAILABLE", "count": 2}}

makes the next 2 AsymmetricSign calls fail with that gRPC status. Rule fields: ``code``
(a ``grpc.StatusCode`` name; ``error`` is accepted as an alias; null = delay only),
``count`` (default 1; <= 0 or a null rule removes it), ``message`` (defaults to what Cloud
KMS says), ``delay`` (seconds to wait first). Keys are KeyManagementService method names.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc

from devnet.faults import FaultTable

from .service import METHODS, SERVICE_NAME, KmsError, KmsState

CONTROL_SERVICE = "custody.devnet.v1.DevnetControl"
READY_PREFIX = "CUSTODY_GCP_KMS_DEVNET_READY "

DEFAULT_MESSAGES = {
    "UNAVAILABLE": "The service is currently unavailable.",
    "RESOURCE_EXHAUSTED": (
        "Quota exceeded for quota metric 'Cryptographic requests' and limit "
        "'Cryptographic requests per minute per region' of service 'cloudkms.googleapis.com'."
    ),
    "DEADLINE_EXCEEDED": "Deadline Exceeded",
    "INTERNAL": "Internal error encountered.",
    "ABORTED": "The operation was aborted.",
}


class FaultInjector(FaultTable):
    """gRPC faults: `code` (or `error`) is a gRPC status code name."""

    fields = frozenset({"code", "error", "message"})
    kind = "method name"

    def _rule(self, name: str, rule: dict[str, Any]) -> dict[str, Any]:
        code_name = rule.get("code", rule.get("error"))
        if isinstance(code_name, grpc.StatusCode):
            code_name = code_name.name
        if code_name is not None and code_name not in grpc.StatusCode.__members__:
            raise ValueError(f"unknown gRPC status code {code_name!r}")
        if code_name == "OK":
            raise ValueError("code OK is not a fault")
        message = rule.get("message") or DEFAULT_MESSAGES.get(code_name or "", code_name or "")
        return {"code": code_name, "message": message}

    def take(self, method: str) -> dict[str, Any] | None:
        return self._consume((method,), method)


class GcpKmsServer:
    """A local Cloud KMS on ``host:port`` (port 0 = pick a free port)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.state = KmsState()
        self.fault_injector = FaultInjector()
        self._server: grpc.aio.Server | None = None

    # --------------------------------------------------------------- lifecycle
    @property
    def address(self) -> str:
        """``host:port`` for ``grpc.aio.insecure_channel``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._kms_handler(), self._control_handler()))
        bind_host = f"[{self.host}]" if ":" in self.host else self.host
        bound = server.add_insecure_port(f"{bind_host}:{self.port}")
        if bound == 0:
            raise RuntimeError(f"could not bind {self.host}:{self.port}")
        self.port = bound
        await server.start()
        self._server = server

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait_for_termination(self) -> None:
        assert self._server is not None
        await self._server.wait_for_termination()

    # ------------------------------------------------------------ test helpers
    def set_faults(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.fault_injector.configure(spec)

    def faults(self) -> dict[str, Any]:
        return self.fault_injector.snapshot()

    def clear_faults(self) -> None:
        self.fault_injector.clear()

    def reset(self) -> None:
        """Forget all key rings/keys and fault rules."""
        self.state.reset()
        self.fault_injector.clear()

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def async_client(self) -> Any:
        """A real ``KeyManagementServiceAsyncClient`` on an insecure channel to this server."""
        from .client import make_async_client

        return make_async_client(self.address)

    # ---------------------------------------------------------------- handlers
    def _kms_handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for method, (req_t, resp_t, attr) in METHODS.items():
            handlers[method] = grpc.unary_unary_rpc_method_handler(
                self._make_unary(method, attr),
                request_deserializer=req_t.deserialize,
                response_serializer=resp_t.serialize,
            )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)

    def _make_unary(self, method: str, attr: str) -> Any:
        state = self.state
        faults = self.fault_injector

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            rule = faults.take(method)
            if rule is not None:
                if rule["delay"] > 0:
                    await asyncio.sleep(rule["delay"])
                if rule["code"] is not None:
                    await context.abort(grpc.StatusCode[rule["code"]], rule["message"])
            try:
                return getattr(state, attr)(request)
            except KmsError as exc:
                await context.abort(exc.code, exc.message)

        return handler

    def _control_handler(self) -> grpc.GenericRpcHandler:
        def unary(fn: Any) -> grpc.RpcMethodHandler:
            async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                try:
                    payload = json.loads(request or b"null")
                    return json.dumps(fn(payload)).encode()
                except (ValueError, TypeError) as exc:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

            return grpc.unary_unary_rpc_method_handler(handler)  # raw bytes in/out

        def clear(_: Any) -> dict[str, Any]:
            self.clear_faults()
            return self.faults()

        def reset(_: Any) -> dict[str, Any]:
            self.reset()
            return {}

        return grpc.method_handlers_generic_handler(
            CONTROL_SERVICE,
            {
                "SetFaults": unary(lambda spec: self.set_faults(spec or {})),
                "GetFaults": unary(lambda _: self.faults()),
                "ClearFaults": unary(clear),
                "Reset": unary(reset),
            },
        )


@contextlib.asynccontextmanager
async def run_gcp_kms(host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[GcpKmsServer]:
    """Run a local Cloud KMS gRPC server in the current event loop.

    ``srv.address`` is ``"host:port"``; ``srv.async_client()`` returns a real
    ``KeyManagementServiceAsyncClient`` connected to it.
    """
    srv = GcpKmsServer(host, port)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()
