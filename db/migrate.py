"""Apply Alembic migrations from code (dev stack, worker start, tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """Built in code, so an installed package (no alembic.ini beside it) migrates the same way;
    alembic.ini at the repository root serves the `alembic` command line."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the schema; a PostgreSQL advisory lock keeps concurrent starters from racing."""
    config = alembic_config()

    def _upgrade(connection):  # type: ignore[no-untyped-def]
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
        await connection.run_sync(_upgrade)
