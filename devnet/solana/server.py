"""HTTP JSON-RPC server for the Solana devnet, its slot ticker, and launchers for tests and the dev stack."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from . import errors
from .errors import RpcError
from .ledger import DEFAULT_FINALIZATION_DEPTH, DEFAULT_SLOT_MS, Ledger
from .persistence import LedgerStore
from .rpc import SolanaRpc

log = logging.getLogger("devnet.solana")


class SlotTicker:
    """Advances the ledger one slot every ``slot_ms`` while enabled. Runs on the server's event loop."""

    def __init__(self, ledger: Ledger, slot_ms: int) -> None:
        self.ledger = ledger
        self.slot_ms = slot_ms or DEFAULT_SLOT_MS
        self.enabled = slot_ms > 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def configure(self, enabled: bool, slot_ms: int | None) -> None:
        if slot_ms:
            self.slot_ms = slot_ms
            self.ledger.slot_ms = slot_ms
        self.enabled = enabled
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            if not self.enabled:
                self._wake.clear()
                await self._wake.wait()
                next_at = loop.time()
                continue
            next_at += self.slot_ms / 1000
            delay = next_at - loop.time()
            if delay < -1:  # fell far behind (debugger, loaded box): do not burst, resynchronise
                next_at = loop.time()
                delay = 0
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(delay, 0))
                next_at = loop.time()  # reconfigured: restart the period
                continue
            if self.enabled:
                self.ledger.advance(1)


def _error_response(id_: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error.to_obj(), "id": id_}


def build_app(
    *,
    slot_ms: int = DEFAULT_SLOT_MS,
    finalization_depth: int = DEFAULT_FINALIZATION_DEPTH,
    confirmation_depth: int = 0,
    state_dir: Path | None = None,
) -> Starlette:
    """The ASGI app. The ledger is created in the lifespan, i.e. on the thread and loop that serve it.

    With ``state_dir`` the chain is saved there as it goes and continued from there at the next start
    (:mod:`devnet.solana.persistence`); without it, it lives in memory only.
    """
    state: dict[str, Any] = {}

    def handle_one(request: Any) -> dict[str, Any] | None:
        valid = isinstance(request, dict) and request.get("jsonrpc") == "2.0"
        if not valid or not isinstance(request.get("method"), str):
            return _error_response(
                request.get("id") if isinstance(request, dict) else None,
                RpcError(errors.INVALID_REQUEST, "Invalid request"),
            )
        is_notification = "id" not in request
        id_ = request.get("id")
        try:
            result = state["rpc"].call(request["method"], request.get("params"))
            response: dict[str, Any] = {"jsonrpc": "2.0", "result": result, "id": id_}
        except RpcError as exc:
            response = _error_response(id_, exc)
        except Exception:  # a bug here must look like a node's internal error, not a dropped connection
            log.exception("internal error in %s", request.get("method"))
            response = _error_response(id_, RpcError(errors.INTERNAL_ERROR, "Internal error"))
        return None if is_notification else response

    async def rpc_endpoint(request: Request) -> Response:
        body = await request.body()
        try:
            payload = json.loads(body)
        except ValueError:
            out: Any = _error_response(None, RpcError(errors.PARSE_ERROR, "Parse error"))
        else:
            if isinstance(payload, list):
                if not payload:
                    out = _error_response(None, RpcError(errors.INVALID_REQUEST, "Invalid request"))
                else:
                    out = [r for r in (handle_one(item) for item in payload) if r is not None]
                    if not out:
                        return Response(status_code=200)
            else:
                out = handle_one(payload)
                if out is None:
                    return Response(status_code=200)
        return Response(json.dumps(out, separators=(",", ":")), media_type="application/json")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = LedgerStore(state_dir) if state_dir is not None else None
        try:
            ledger = Ledger(
                slot_ms=slot_ms,
                finalization_depth=finalization_depth,
                confirmation_depth=confirmation_depth,
                store=store,
            )
            ticker = SlotTicker(ledger, slot_ms)
            state["ledger"], state["ticker"], state["rpc"] = ledger, ticker, SolanaRpc(ledger, ticker)
            ticker.start()
            try:
                yield
            finally:
                await ticker.stop()
        finally:
            if store is not None:
                store.close()

    return Starlette(
        routes=[Route("/", rpc_endpoint, methods=["POST"]), Route("/health", health, methods=["GET"])],
        lifespan=lifespan,
    )


class SolanaDevnet:
    """A devnet served by uvicorn on a background thread. ``start()`` / ``stop()``, or use it as a context manager.

    ``port=0`` picks a free port; ``url`` is valid after ``start()``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        slot_ms: int = DEFAULT_SLOT_MS,
        finalization_depth: int = DEFAULT_FINALIZATION_DEPTH,
        confirmation_depth: int = 0,
        state_dir: Path | None = None,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        self.port = port
        self.app = build_app(
            slot_ms=slot_ms,
            finalization_depth=finalization_depth,
            confirmation_depth=confirmation_depth,
            state_dir=state_dir,
        )
        self._config = uvicorn.Config(self.app, log_level=log_level, lifespan="on", access_log=False)
        self._server = uvicorn.Server(self._config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> SolanaDevnet:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto must say TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP, and
        # without it Nagle + delayed ACK add ~40 ms to every keep-alive request.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]

        def run() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[sock]))
            except BaseException as exc:  # surfaced by start()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"solana-devnet-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"solana devnet failed to start on {self.url}") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"solana devnet did not start within {timeout}s on {self.url}")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SolanaDevnet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------- control helpers
    async def control(self, method: str, params: Any = None) -> Any:
        """Call a JSON-RPC method (typically a ``devnet_*`` one) and return its result; raises on an error."""
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params if params is not None else []}
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10)
        reply = (await self._http.post(self.url, json=body)).json()
        if "error" in reply:
            raise RpcError(reply["error"]["code"], reply["error"]["message"], reply["error"].get("data"))
        return reply["result"]

    async def aclose(self) -> None:
        """Close the HTTP client the control helpers keep (``run_solana_devnet`` does this on exit)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def advance_slots(self, count: int = 1) -> dict[str, Any]:
        return await self.control("devnet_advanceSlots", {"count": count})

    async def expire_blockhashes(self) -> dict[str, Any]:
        return await self.control("devnet_expireBlockhashes")

    async def set_auto_tick(self, enabled: bool, slot_ms: int | None = None) -> dict[str, Any]:
        return await self.control("devnet_setAutoTick", {"enabled": enabled, "slotMs": slot_ms})

    async def drop_next_sends(self, count: int = 1) -> dict[str, Any]:
        return await self.control("devnet_dropNextSends", {"count": count})

    async def hold_sends(self) -> dict[str, Any]:
        return await self.control("devnet_holdSends")

    async def release_sends(self) -> list[dict[str, Any]]:
        return await self.control("devnet_releaseSends")

    async def state(self) -> dict[str, Any]:
        return await self.control("devnet_getState")


@contextlib.asynccontextmanager
async def run_solana_devnet(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    slot_ms: int = DEFAULT_SLOT_MS,
    finalization_depth: int = DEFAULT_FINALIZATION_DEPTH,
    confirmation_depth: int = 0,
    state_dir: Path | None = None,
    log_level: str = "warning",
) -> AsyncIterator[SolanaDevnet]:
    """``async with run_solana_devnet(port=0, slot_ms=0) as devnet: AsyncClient(devnet.url)``.

    ``slot_ms=0`` starts with the ticker off (slots move only via ``devnet_advanceSlots``).
    """
    devnet = SolanaDevnet(
        host,
        port,
        slot_ms=slot_ms,
        finalization_depth=finalization_depth,
        confirmation_depth=confirmation_depth,
        state_dir=state_dir,
        log_level=log_level,
    )
    await asyncio.to_thread(devnet.start)
    try:
        yield devnet
    finally:
        await devnet.aclose()
        await asyncio.to_thread(devnet.stop)
