"""Rate limits in Redis: one token bucket per (bucket, subject), kept as GCRA's theoretical
arrival time so a check is one atomic script run with Redis's own clock (no skew between API
instances).

Buckets ("N/period": N requests per period, bursting up to N): per identity and per client IP on
every authenticated request, `wallet_creation` per identity, `failed_auth` per IP (when spent,
that IP is answered 429 before its credentials are checked). Redis unreachable: reads go through
(logged), writes fail closed with 503 RATE_LIMITER_UNAVAILABLE.
"""

from __future__ import annotations

import logging
import math
import re

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core import metrics
from core.errors import RateLimited, RateLimiterUnavailable
from core.settings import RateLimitSettings

log = logging.getLogger("custody.api.ratelimit")

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")

# KEYS[1]: the bucket. ARGV: emission interval (ms per request), burst (ms), 1 to take a token
# or 0 to only look. Returns {allowed, ms until the next request would be allowed}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local wait = new_tat - burst - now
if wait > 0 then return {0, wait} end
if ARGV[3] == '1' then redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil(new_tat - now) + 1000) end
return {1, 0}
"""


def parse_rate(text: str) -> tuple[int, int]:
    """(requests, period seconds) of "N/second|minute|hour|day"."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"a rate is 'N/second|minute|hour|day' with N > 0, not {text!r}")
    return int(match.group(1)), _PERIODS[match.group(2)]


class RateLimiter:
    def __init__(self, redis: Redis, settings: RateLimitSettings) -> None:
        self._redis = redis
        self._settings = settings
        self._script = redis.register_script(_GCRA)
        self._rates = {name: parse_rate(getattr(settings, name)) for name in ("per_identity", "per_ip", "wallet_creation", "failed_auth")}

    async def take(self, bucket: str, subject: str, *, write: bool) -> None:
        """Spend one request of `subject` in `bucket`; RateLimited (429) when none is left."""
        await self._run(bucket, subject, write=write, take=True)

    async def refuse_if_spent(self, bucket: str, subject: str, *, write: bool) -> None:
        """429 if `bucket` has nothing left for `subject`, without spending anything."""
        await self._run(bucket, subject, write=write, take=False)

    async def _run(self, bucket: str, subject: str, *, write: bool, take: bool) -> None:
        if not self._settings.enabled:
            return
        limit, period = self._rates[bucket]
        interval_ms = period * 1000 / limit
        try:
            allowed, wait_ms = await self._script(keys=[f"custody:rl:{bucket}:{subject}"], args=[interval_ms, period * 1000, "1" if take else "0"])
        except (RedisError, OSError) as e:
            metrics.RATE_LIMIT_UNAVAILABLE.labels(write=str(write).lower()).inc()
            if write:
                raise RateLimiterUnavailable("rate limits cannot be checked (Redis unreachable): writes are refused") from e
            log.warning("rate limiter unreachable: read allowed", extra={"bucket": bucket, "error": type(e).__name__})
            return
        if not allowed:
            metrics.RATE_LIMITED.labels(bucket=bucket).inc()
            retry_after = max(1, math.ceil(int(wait_ms) / 1000))
            raise RateLimited(
                f"too many requests ({limit} per {period} s for {bucket.replace('_', ' ')})",
                bucket=bucket,
                retry_after_seconds=retry_after,
            )
