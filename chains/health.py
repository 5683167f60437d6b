"""Per-endpoint health: a circuit breaker, and which failures count against an endpoint.

    CLOSED --N consecutive connectivity failures--> OPEN --cool-down--> HALF_OPEN (one trial call)
    HALF_OPEN --trial answered--> CLOSED;  HALF_OPEN --trial failed--> OPEN (a new cool-down)

Only connectivity counts: refused, reset, timeout, HTTP 5xx or 429, a node that says it is
behind. Adapters raise those as ChainUnavailable *from* the client library's error (the edge
translation of STYLE.md); a node's answer about the transaction itself (`nonce too low`,
`already known`, an underpriced replacement, Bor's tip minimum, Horizon `tx_bad_seq`, a Solana
preflight failure, even EVM's ChainUnavailable "nonce too high", raised without a cause) proves
the endpoint is up and never opens its breaker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum
from urllib.parse import urlsplit

from core.errors import ChainUnavailable


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def is_connectivity_failure(error: BaseException) -> bool:
    """Whether `error` says the endpoint could not be reached or is not serving (see module doc)."""
    return isinstance(error, ChainUnavailable) and error.__cause__ is not None


def endpoint_label(index: int, url: str) -> str:
    """A name for logs and metric labels: position and host[:port] only. RPC URLs often carry
    an API key in the path, query or user info; none of those ever leave this function."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{index}-{host}" + (f":{port}" if port else "")


class Permit:
    """Leave to make one call to an endpoint; report its outcome exactly once."""

    __slots__ = ("_breaker", "_trial", "_done")

    def __init__(self, breaker: CircuitBreaker, trial: bool) -> None:
        self._breaker, self._trial, self._done = breaker, trial, False

    @property
    def trial(self) -> bool:
        """The half-open probe: the one call that decides whether the endpoint is back."""
        return self._trial

    def answered(self) -> None:
        """The endpoint answered (a result, or an error about the request itself)."""
        if not self._done:
            self._done = True
            self._breaker._answered(self._trial)

    def failed(self) -> None:
        """The endpoint was unreachable or not serving."""
        if not self._done:
            self._done = True
            self._breaker._failed(self._trial)

    def release(self) -> None:
        """No verdict (the call was cancelled, or failed in a way that says nothing of the node)."""
        if not self._done:
            self._done = True
            self._breaker._released(self._trial)


class CircuitBreaker:
    """Thread-safe; `clock` is injectable so the state machine is testable without waiting."""

    def __init__(self, failure_threshold: int, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1 or cooldown_seconds <= 0:
            raise ValueError("failure_threshold >= 1 and cooldown_seconds > 0")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0  # consecutive, while closed
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    @property
    def consecutive_failures(self) -> int:
        with self._lock:
            return self._failures

    @property
    def available(self) -> bool:
        """Closed, or due for (or in) a half-open trial: a healthy endpoint to route to."""
        with self._lock:
            return self._state == BreakerState.CLOSED or self._clock() - self._opened_at >= self.cooldown_seconds

    def acquire(self) -> Permit | None:
        """A permit if the endpoint may be called now: always while closed; after the cool-down,
        one trial call at a time; otherwise None (the caller tries another endpoint)."""
        with self._lock:
            if self._state == BreakerState.CLOSED:
                return Permit(self, trial=False)
            if self._state == BreakerState.OPEN and self._clock() - self._opened_at < self.cooldown_seconds:
                return None
            if self._trial_running:
                return None
            self._state, self._trial_running = BreakerState.HALF_OPEN, True
            return Permit(self, trial=True)

    def force(self) -> Permit:
        """A permit regardless of the state: every endpoint is open and the call is tried anyway.
        Its outcome still counts (an answer closes the breaker)."""
        return Permit(self, trial=False)

    def _answered(self, trial: bool) -> None:
        with self._lock:
            if trial:
                self._trial_running = False
            self._state, self._failures = BreakerState.CLOSED, 0

    def _failed(self, trial: bool) -> None:
        with self._lock:
            if trial:
                self._trial_running = False
            if self._state == BreakerState.CLOSED:
                self._failures += 1
                if self._failures < self.failure_threshold:
                    return
            # Open, or open again: a failed trial (or a forced call) restarts the cool-down.
            self._state, self._opened_at, self._failures = BreakerState.OPEN, self._clock(), 0

    def _released(self, trial: bool) -> None:
        with self._lock:
            if trial:
                self._trial_running = False  # stays half-open: the next call is the trial
