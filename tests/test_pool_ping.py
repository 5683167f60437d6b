"""The worker's pool pings a connection only when it sat idle (db/engine.py): a connection used
moments ago is handed out as is, and when the server dropped it meanwhile its first statement
fails as DATABASE_UNAVAILABLE (an activity retries it) and the next session gets a new
connection; one idle longer is pinged and replaced before use, as with the API's pre-ping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from db.engine import SessionFactory, create_engine, create_session_factory
from db.unavailable import database_unavailable


async def _backend_pid(factory: SessionFactory) -> int:
    async with factory() as session:
        return int((await session.exec(sa.select(sa.func.pg_backend_pid()))).one()[0])  # type: ignore[call-overload]


async def _terminate(sessions: SessionFactory, pid: int) -> None:
    async with sessions() as session:
        assert (await session.exec(sa.select(sa.func.pg_terminate_backend(pid)))).one()[0]  # type: ignore[call-overload]
    await asyncio.sleep(0.2)  # the backend is gone before the pool hands its connection out again


@asynccontextmanager
async def _pool_whose_connection_was_dropped(
    database_url: str, sessions: SessionFactory, ping_idle_after: float
) -> AsyncIterator[tuple[SessionFactory, int]]:
    """A one-connection pool that used its connection, and the backend pid the server then ended."""
    engine = create_engine(database_url, pool_size=1, ping_idle_after=ping_idle_after)
    factory = create_session_factory(engine)
    try:
        dropped = await _backend_pid(factory)
        await _terminate(sessions, dropped)
        yield factory, dropped
    finally:
        await engine.dispose()


async def test_a_connection_idle_past_the_limit_is_pinged_and_replaced_before_use(base_settings, sessions) -> None:
    async with _pool_whose_connection_was_dropped(base_settings.database_url, sessions, ping_idle_after=0.0) as (factory, dropped):
        assert await _backend_pid(factory) != dropped  # no error: the ping found it dead


async def test_a_connection_used_moments_ago_is_not_pinged_and_its_loss_is_database_unavailable_once(base_settings, sessions) -> None:
    async with _pool_whose_connection_was_dropped(base_settings.database_url, sessions, ping_idle_after=60.0) as (factory, dropped):
        with pytest.raises(DBAPIError) as lost:
            await _backend_pid(factory)
        assert database_unavailable(lost.value)  # an activity fails DATABASE_UNAVAILABLE and is retried
        assert await _backend_pid(factory) != dropped
