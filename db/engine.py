"""Async engine and session factory (SQLModel over asyncpg)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

SessionFactory = async_sessionmaker[AsyncSession]

# The worker's pooled connections are pinged only after sitting idle this long (see create_engine).
WORKER_PING_IDLE_AFTER_SECONDS = 5.0
_RETURNED_AT = "custody_returned_at"


def create_engine(database_url: str, *, pool_size: int = 10, ping_idle_after: float | None = None) -> AsyncEngine:
    """The pool checks a connection is alive before handing it out (a restarted PostgreSQL leaves
    every pooled connection dead). By default before every use (SQLAlchemy's pre-ping: three round
    trips, BEGIN, `;`, ROLLBACK): the API keeps that, so no caller gets a 503 for a dead pooled
    connection. `ping_idle_after`: only a connection idle longer than that many seconds is pinged;
    one used more recently that died with the server fails its first statement, which invalidates
    the whole pool. The worker takes this: that failure is one retried activity attempt, and the
    ping was 3 % of its CPU, eleven times per withdrawal (issue 14)."""
    engine = create_async_engine(database_url, pool_size=pool_size, max_overflow=20, pool_pre_ping=ping_idle_after is None)
    if ping_idle_after is not None:
        _ping_when_idle(engine, ping_idle_after)
    return engine


def _ping_when_idle(engine: AsyncEngine, seconds: float) -> None:
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at <= seconds:
            return  # just connected, or in use moments ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as e:
            # As the pre-ping does: the server went away, so every pooled connection is suspect.
            raise exc.InvalidatePoolError() from e


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
