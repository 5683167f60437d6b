"""Run the devnet in-process: uvicorn on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn
from stellar_sdk import Keypair

from .app import DEFAULT_FRIENDBOT_XLM, create_app
from .ledger import DEFAULT_BASE_FEE, DEFAULT_BASE_RESERVE, DEFAULT_NETWORK_PASSPHRASE, StellarLedger
from .persistence import LedgerStore


class StellarDevnet:
    """A devnet server. ``start()`` binds (port 0 = a free port) and returns once it serves."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        network_passphrase: str = DEFAULT_NETWORK_PASSPHRASE,
        close_interval_ms: int = 1000,
        base_fee: int = DEFAULT_BASE_FEE,
        base_reserve: int = DEFAULT_BASE_RESERVE,
        friendbot_xlm: int = DEFAULT_FRIENDBOT_XLM,
        submission_timeout: float = 30.0,
        state_dir: Path | None = None,
        log_level: str = "warning",
    ) -> None:
        self.host = host
        self.port = port
        self.ledger = StellarLedger(
            network_passphrase,
            base_fee=base_fee,
            base_reserve=base_reserve,
            store=LedgerStore(state_dir) if state_dir is not None else None,
        )
        self.app = create_app(
            self.ledger,
            close_interval_ms=close_interval_ms,
            submission_timeout=submission_timeout,
            friendbot_xlm=friendbot_xlm,
        )
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None

    @property
    def network_passphrase(self) -> str:
        return self.ledger.network_passphrase

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def friendbot_url(self) -> str:
        return f"{self.url}/friendbot"

    @property
    def root_keypair(self) -> Keypair:
        """stellar-core's root account (holds all lumens; seed = sha256(network passphrase))."""
        return self.ledger.root_keypair

    def start(self, timeout: float = 5.0) -> StellarDevnet:
        if self._thread is not None:
            raise RuntimeError("devnet already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level=self._log_level,
            access_log=False,
            lifespan="on",
            loop="asyncio",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)

        def run() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[sock]))
            except BaseException as e:  # surfaced by start()
                self._error = e

        self._thread = threading.Thread(target=run, name=f"stellar-devnet:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                self.stop()
                raise RuntimeError(f"stellar devnet failed to start: {self._error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"stellar devnet did not start within {timeout}s")
            time.sleep(0.005)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> StellarDevnet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> StellarDevnet:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


@contextlib.asynccontextmanager
async def run_stellar_devnet(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    network_passphrase: str = DEFAULT_NETWORK_PASSPHRASE,
    close_interval_ms: int = 1000,
    base_fee: int = DEFAULT_BASE_FEE,
    base_reserve: int = DEFAULT_BASE_RESERVE,
    friendbot_xlm: int = DEFAULT_FRIENDBOT_XLM,
    submission_timeout: float = 30.0,
    state_dir: Path | None = None,
    log_level: str = "warning",
) -> AsyncIterator[StellarDevnet]:
    """``async with run_stellar_devnet(port=0) as devnet: ServerAsync(devnet.url, ...)``."""
    devnet = StellarDevnet(
        host,
        port,
        network_passphrase=network_passphrase,
        close_interval_ms=close_interval_ms,
        base_fee=base_fee,
        base_reserve=base_reserve,
        friendbot_xlm=friendbot_xlm,
        submission_timeout=submission_timeout,
        state_dir=state_dir,
        log_level=log_level,
    )
    async with devnet:
        yield devnet


@contextlib.contextmanager
def running_stellar_devnet(host: str = "127.0.0.1", port: int = 0, **kwargs) -> Iterator[StellarDevnet]:
    """Synchronous twin of :func:`run_stellar_devnet` (same keyword arguments)."""
    with StellarDevnet(host, port, **kwargs) as devnet:
        yield devnet
