"""Connecting to a Temporal frontend that was just started: it accepts connections before it
serves, and for a moment answers GetSystemInfo with Unavailable "Frontend is not healthy yet".
Found by a fresh-clone CI run under load (a test that starts a second dev server connected as
soon as its port opened). The worker and the API wait that out; any other failure is raised.

The fault is injected at the wire: a gRPC proxy in front of the session's real dev server refuses
the first GetSystemInfo calls the way a starting frontend does and forwards everything else."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from core.temporal import connect_temporal
from devnet import local

# Headers gRPC sets per connection: the proxy's own outbound call sets them again.
HOP_BY_HOP = ("user-agent", "content-type", "te", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout")


class StartingFrontend(grpc.GenericRpcHandler):
    """Forwards every unary call to `target` as bytes; the first `refusals` GetSystemInfo calls
    are answered UNAVAILABLE "Frontend is not healthy yet" instead."""

    def __init__(self, target: str, refusals: int) -> None:
        self.channel = aio.insecure_channel(target)
        self.refusals = refusals
        self.refused = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        async def forward(request: bytes, context: aio.ServicerContext) -> bytes:
            if method.endswith("/GetSystemInfo") and self.refused < self.refusals:
                self.refused += 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, "Frontend is not healthy yet")
            metadata = [(k, v) for k, v in context.invocation_metadata() or () if not k.startswith(":") and k not in HOP_BY_HOP]
            call = self.channel.unary_unary(method)
            answer: bytes = await call(request, metadata=metadata)
            return answer

        return grpc.unary_unary_rpc_method_handler(forward)


@pytest.fixture
async def starting_frontend(temporal_env: WorkflowEnvironment) -> AsyncIterator[tuple[str, StartingFrontend]]:
    handler = StartingFrontend(temporal_env.client.service_client.config.target_host, refusals=3)
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", handler
    finally:
        await server.stop(None)
        await handler.channel.close()


async def test_a_frontend_not_healthy_yet_is_waited_for(starting_frontend: tuple[str, StartingFrontend], base_settings: Settings) -> None:
    address, frontend = starting_frontend
    client = await connect_temporal(base_settings.model_copy(update={"temporal_address": address}))
    assert frontend.refused == 3  # refused three times, then connected through the proxy
    assert (await client.workflow_service.get_system_info(GetSystemInfoRequest())).server_version


async def test_nothing_listening_is_raised_at_once(base_settings: Settings) -> None:
    with pytest.raises(RuntimeError) as refused:
        await connect_temporal(base_settings.model_copy(update={"temporal_address": f"127.0.0.1:{local.free_port()}"}))
    assert "not healthy yet" not in str(refused.value)
