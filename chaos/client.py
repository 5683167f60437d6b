"""The harness's HTTP client of the custody API, behaving as a careful integrator would while
the API is killed and its dependencies restart: a request that got no answer (refused, reset,
timed out), a 5xx or a 429 (after its Retry-After) is sent again, the same Idempotency-Key with
the same body, until it is answered or the caller's deadline passes. Other 4xx answers are
returned as they are."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

ALICE = "dev-alice-key"
OPS = "dev-ops-key"


class GaveUp(Exception):
    """No answer before the deadline."""


class ChaosClient:
    def __init__(self, base_url: str, api_key: str = ALICE, timeout: float = 20.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        self.retries = 0  # requests sent again (no answer, or a 5xx)
        self.server_errors: dict[str, int] = {}  # 5xx and 429 answers by route and code, for the report

    async def close(self) -> None:
        await self._http.aclose()

    async def request(self, method: str, path: str, *, deadline: float = 180.0, **kwargs: Any) -> httpx.Response:
        give_up = time.monotonic() + deadline
        pause = 0.2
        tries = 0
        while True:
            tries += 1
            try:
                response = await self._http.request(method, path, **kwargs)
                response.extensions["chaos_tries"] = tries
                if response.status_code < 500 and response.status_code != 429:
                    return response
                key = f"{method} {_route(path)} {response.status_code}"
                self.server_errors[key] = self.server_errors.get(key, 0) + 1
                wait = float(response.headers.get("Retry-After") or 0) if response.status_code == 429 else 0.0
            except httpx.TransportError:
                wait = 0.0  # refused, reset or timed out: the API may be restarting
            wait = max(wait, pause)
            if time.monotonic() + wait > give_up:
                raise GaveUp(f"{method} {path}: no answer in {deadline:.0f} s")
            self.retries += 1
            await asyncio.sleep(wait)
            pause = min(pause * 1.5, 2.0)

    async def json(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 202), **kwargs: Any) -> Any:
        response = await self.request(method, path, **kwargs)
        if response.status_code not in expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()


def _route(path: str) -> str:
    """/v1/withdrawals/<id>/cancel -> /v1/withdrawals/{id}/cancel (for counting, not URLs)."""
    parts = path.split("?")[0].split("/")
    return "/".join("{id}" if len(p) >= 32 else p for p in parts)
