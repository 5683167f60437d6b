"""Telling "PostgreSQL is out of reach" (restarting, failing over, too many connections) from
every other database error, so it is answered as a transient condition with its own code
(DATABASE_UNAVAILABLE) instead of a bug: the API says 503, activities are retried quietly."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg.exceptions as pg
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

# The server refusing or dropping connections: starting up, shutting down, crashed, lost.
_SERVER_GONE = (
    pg.CannotConnectNowError,
    pg.AdminShutdownError,
    pg.CrashShutdownError,
    pg.ConnectionDoesNotExistError,
    pg.PostgresConnectionError,
    pg.TooManyConnectionsError,
)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _raised_by_asyncpg(error: BaseException) -> bool:
    """An OSError from asyncpg itself (its connect: socket gone, refused, reset), not from
    anything else the same code path might touch."""
    tb = error.__traceback__
    while tb is not None:
        if "/asyncpg/" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def database_unavailable(error: BaseException) -> bool:
    for e in _chain(error):
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, (DisconnectionError, PoolTimeout, *_SERVER_GONE)):
            return True
        if isinstance(e, (ConnectionError, FileNotFoundError, TimeoutError)) and _raised_by_asyncpg(e):
            return True
    return False


# A table or column this code reads that the database does not have: its migrations are behind.
_SCHEMA_BEHIND = (pg.UndefinedTableError, pg.UndefinedColumnError)


def schema_behind(error: BaseException) -> bool:
    """The database answered, without a table or column this code uses (not migrated yet)."""
    return any(isinstance(e, _SCHEMA_BEHIND) for e in _chain(error))
