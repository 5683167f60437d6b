"""In-process locks in front of PostgreSQL advisory locks.

Work serialized per sender (nonce claims) or per wallet (reservations) takes the process-local
lock for that key *before* it borrows a database connection. Otherwise every waiter would hold
a pooled connection while blocked on the advisory lock, and under load the lock holder could not
get the connection it needs (e.g. the local keystore's read), stalling until timeouts. The
advisory lock stays: it serializes across worker processes.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession


async def advisory_lock(session: AsyncSession, *parts: str) -> None:
    """Serialize on a key for the rest of this transaction (PostgreSQL advisory lock)."""
    # sqlmodel's exec overloads take a select of model columns, not of a SQL function (stubs gap).
    await session.exec(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(":".join(parts), 0))))  # type: ignore[call-overload]


async def advisory_locks(session: AsyncSession, locks: list[tuple[tuple[str, ...], bool]]) -> None:
    """Take several advisory locks for the rest of this transaction, in the given order, in one
    round trip: each is `(key parts, shared)`. PostgreSQL evaluates a select list left to right,
    so callers that list their keys in one agreed order (widest first) cannot deadlock."""
    calls = [
        (sa.func.pg_advisory_xact_lock_shared if shared else sa.func.pg_advisory_xact_lock)(sa.func.hashtextextended(":".join(parts), 0))
        for parts, shared in locks
    ]
    await session.exec(sa.select(*calls))  # type: ignore[call-overload]


class KeyedLocks:
    def __init__(self) -> None:
        # Weak values: a key's lock lives only while some coroutine holds or awaits it.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    @asynccontextmanager
    async def hold(self, *parts: str) -> AsyncIterator[None]:
        key = ":".join(parts)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            yield
