"""Connecting the real google-cloud-kms client to the devnet, and the fault-control RPCs.

The real async client talks to the devnet over plain gRPC, no credentials::

    import grpc
    from google.cloud.kms_v1 import KeyManagementServiceAsyncClient
    from google.cloud.kms_v1.services.key_management_service.transports import (
        KeyManagementServiceGrpcAsyncIOTransport,
    )

    channel = grpc.aio.insecure_channel("127.0.0.1:9010")
    client = KeyManagementServiceAsyncClient(
        transport=KeyManagementServiceGrpcAsyncIOTransport(channel=channel)
    )
    ...
    await client.transport.close()      # closes the channel

(When ``channel`` is given the transport ignores credentials, so ``google.auth.default()``
is never consulted.)
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from .server import CONTROL_SERVICE


def make_async_client(address: str) -> Any:
    from google.cloud.kms_v1 import KeyManagementServiceAsyncClient
    from google.cloud.kms_v1.services.key_management_service.transports import (
        KeyManagementServiceGrpcAsyncIOTransport,
    )

    channel = grpc.aio.insecure_channel(address)
    return KeyManagementServiceAsyncClient(transport=KeyManagementServiceGrpcAsyncIOTransport(channel=channel))


async def _control(address: str, method: str, payload: Any = None) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{CONTROL_SERVICE}/{method}")
        raw = await call(json.dumps(payload).encode(), timeout=10)
        return json.loads(raw) if raw else None


async def set_faults(address: str, spec: dict[str, Any]) -> dict[str, Any]:
    """E.g. ``await set_faults(addr, {"AsymmetricSign": {"code": "UNAVAILABLE", "count": 2}})``."""
    return await _control(address, "SetFaults", spec)


async def get_faults(address: str) -> dict[str, Any]:
    return await _control(address, "GetFaults")


async def clear_faults(address: str) -> None:
    await _control(address, "ClearFaults")


async def reset(address: str) -> None:
    """Forget all key rings/keys and fault rules of the devnet at ``address``."""
    await _control(address, "Reset")
