"""The fault plan of a chaos run, drawn from its seed, and the executor that carries it out
inside the fault window: SIGKILL a worker or the API (and start it again), restart the
Temporal dev server (same database file and port) or PostgreSQL (crashed, same data
directory), reorganize anvil (`anvil_reorg`, never deeper than its finalized block), throttle
the AWS KMS devnet, and wire fault episodes on the proxies in front of the nodes: hangs (the
client times out), 5xx, connection resets, delays, and answers dropped after the node accepted
a transaction."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from chaos.config import ChaosConfig

log = logging.getLogger("custody.chaos")

# What a node accepts transactions with (the target of drop_response).
SEND_RULE = {
    "anvil": {"rpc_method": "eth_sendRawTransaction"},
    "solana": {"rpc_method": "sendTransaction"},
    "stellar": {"http": "POST /transactions"},
}
WIRE_ACTIONS = ("error", "reset", "hang", "delay", "drop_response", "timeout")
# anvil with one slot per epoch finalizes the block two behind the head: a reorg of one or two
# blocks takes back only blocks that are not final yet, as on a real chain.
MAX_REORG_DEPTH = 2


@dataclass
class FaultEvent:
    at: float  # seconds after the start of the fault window
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"at": round(self.at, 2), "kind": self.kind, **self.params, **({"error": self.error} if self.error else {})}


def _count(rate: float, withdrawals: int) -> int:
    return 0 if rate <= 0 else max(1, math.ceil(rate * withdrawals / 100))


def plan_faults(config: ChaosConfig, rng: random.Random) -> list[FaultEvent]:
    """Every fault of the run, from the seed alone; none in the last few seconds of the window
    so the last restart is done before the window closes."""
    window = config.fault_window_seconds
    rates, n = config.rates, config.withdrawals

    def moment(end: float = window - 8.0) -> float:
        return rng.uniform(1.0, max(end, 2.0))

    events: list[FaultEvent] = []
    for _ in range(_count(rates.worker_kills, n)):
        events.append(FaultEvent(moment(), "kill_worker", {"worker": rng.randrange(2), "down": round(rng.uniform(0.5, 4), 2)}))
    for _ in range(_count(rates.api_kills, n)):
        events.append(FaultEvent(moment(), "kill_api", {"down": round(rng.uniform(0.5, 3), 2)}))
    for _ in range(_count(rates.temporal_restarts, n)):
        events.append(FaultEvent(moment(), "restart_temporal", {"down": round(rng.uniform(0.5, 3), 2)}))
    for _ in range(_count(rates.postgres_restarts, n)):
        events.append(FaultEvent(moment(), "restart_postgres", {"down": round(rng.uniform(0.5, 3), 2)}))
    for _ in range(_count(rates.reorgs, n)):
        events.append(FaultEvent(moment(), "reorg", {"depth": rng.randint(1, MAX_REORG_DEPTH)}))
    if config.kms_share > 0:
        for _ in range(_count(rates.kms_throttles, n)):
            events.append(FaultEvent(moment(config.submit_seconds - 3), "kms_throttle", {"count": rng.randint(2, 8)}))
    for chain in SEND_RULE:
        actions = list(WIRE_ACTIONS)
        rng.shuffle(actions)  # every kind of wire fault on every node at least once
        for i in range(max(_count(rates.wire_episodes, n), len(actions))):
            action = actions[i] if i < len(actions) else rng.choice(WIRE_ACTIONS)
            # While submissions still come, so every episode meets traffic.
            events.append(FaultEvent(moment(config.submit_seconds - 3), "wire", {"chain": chain, **_wire_rule(action, chain, rng)}))
    events.sort(key=lambda e: e.at)
    return events


def _wire_rule(action: str, chain: str, rng: random.Random) -> dict[str, Any]:
    """One episode: a proxy rule on for `duration` seconds."""
    duration = round(rng.uniform(2, 6), 2)
    probability = round(rng.uniform(0.2, 0.6), 2)
    if action == "error":
        rule = {"action": "error", "status": rng.choice([500, 502, 503, 504]), "probability": probability}
    elif action == "reset":
        rule = {"action": "reset", "probability": probability}
    elif action == "hang":
        rule = {"action": "hang", "seconds": round(rng.uniform(1, 4), 2), "probability": probability}
    elif action == "timeout":
        # Held until the client gives up (its own timeout): the next few requests, whenever
        # they come (the rule stays until used up or the window closes).
        return {"episode": action, "duration": None, "rule": {"action": "hang", "count": rng.randint(1, 3)}}
    elif action == "delay":
        rule = {"action": "delay", "seconds": round(rng.uniform(0.3, 2), 2), "probability": probability}
    else:
        # The node accepts the next few transactions; their answers never reach custody.
        rule = {"action": "drop_response", **SEND_RULE[chain], "count": rng.randint(1, 4)}
        return {"episode": action, "duration": None, "rule": rule}
    return {"episode": action, "duration": duration, "rule": rule}


def _http(method: str, url: str, body: Any = None, timeout: float = 10) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


class FaultExecutor:
    """Carries out the plan against a running ChaosStack."""

    def __init__(self, stack: Any, events: list[FaultEvent]) -> None:
        self.stack = stack
        self.events = events
        self._names = 0
        self._kms_seen: dict[str, Any] = {}
        self.slow_restarts: list[str] = []  # planned restarts that failed and were left to the supervisor

    async def run(self, window_started: float) -> None:
        await asyncio.gather(*(self._at(e, window_started) for e in self.events))

    async def _at(self, event: FaultEvent, window_started: float) -> None:
        await asyncio.sleep(max(0.0, window_started + event.at - time.monotonic()))
        event.started_at = time.monotonic() - window_started
        try:
            await getattr(self, f"_{event.kind}")(**event.params)
        except Exception as e:  # a fault that could not be made is reported, not fatal
            event.error = f"{type(e).__name__}: {e}"
            log.warning("chaos: %s failed: %s", event.kind, event.error)
        event.finished_at = time.monotonic() - window_started

    async def _down_then_up(self, stop: Any, start: Any, down: float) -> None:
        await asyncio.to_thread(stop)
        await asyncio.sleep(down)
        try:
            await asyncio.to_thread(start)
        except Exception as e:  # the fault was made; the supervisor keeps starting it
            self.slow_restarts.append(f"{type(e).__name__}: {e}"[:300])

    async def _kill_worker(self, worker: int, down: float) -> None:
        service = self.stack.workers[worker]
        await self._down_then_up(service.kill, service.start, down)

    async def _kill_api(self, down: float) -> None:
        await self._down_then_up(self.stack.api.kill, self.stack.api.start, down)

    async def _restart_temporal(self, down: float) -> None:
        service = self.stack.temporal
        await self._down_then_up(service.stop, service.start, down)

    async def _restart_postgres(self, down: float) -> None:
        pg = self.stack.postgres
        await self._down_then_up(pg.crash, pg.resume, down)

    async def _reorg(self, depth: int) -> None:
        await asyncio.to_thread(
            _http, "POST", self.stack.node_url("anvil"), {"jsonrpc": "2.0", "id": 1, "method": "anvil_reorg", "params": [depth, []]}
        )

    async def _kms_throttle(self, count: int) -> None:
        await asyncio.to_thread(_http, "POST", f"{self.stack.kms_url}/_custody/faults", {"Sign": {"error": "ThrottlingException", "count": count}})

    async def _wire(self, chain: str, episode: str, duration: float | None, rule: dict[str, Any]) -> None:
        """A rule on for `duration` seconds (None: until its count is used up or the window closes)."""
        self._names += 1
        name = f"chaos-{self._names}-{episode}"
        url = f"{self.stack.proxy_url(chain)}/_faults"
        await asyncio.to_thread(_http, "POST", url, {**rule, "name": name})
        if duration is None:
            return
        await asyncio.sleep(duration)
        try:
            await asyncio.to_thread(_http, "DELETE", f"{url}/{name}")
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404: a counted rule already used up
                raise

    # --- after the window ------------------------------------------------------------------
    async def clear(self) -> None:
        """Every wire and KMS fault off."""
        for chain in SEND_RULE:
            await asyncio.to_thread(_http, "DELETE", f"{self.stack.proxy_url(chain)}/_faults")
        if self.stack.kms_enabled:
            # The KMS fault table forgets its counters with its rules: keep them first.
            self._kms_seen = await asyncio.to_thread(_http, "GET", f"{self.stack.kms_url}/_custody/faults")
            await asyncio.to_thread(_http, "DELETE", f"{self.stack.kms_url}/_custody/faults")

    async def counters(self) -> dict[str, Any]:
        """What the proxies (and the KMS) really injected."""
        result: dict[str, Any] = {}
        for chain in SEND_RULE:
            snap = await asyncio.to_thread(_http, "GET", f"{self.stack.proxy_url(chain)}/_faults")
            result[chain] = {"requests": snap["requests"], "injected": snap["injected"]}
        if self.stack.kms_enabled:
            now = await asyncio.to_thread(_http, "GET", f"{self.stack.kms_url}/_custody/faults")
            result["kms"] = {key: dict(Counter(self._kms_seen.get(key, {})) + Counter(now.get(key, {}))) for key in ("fired", "calls")}
        return result
