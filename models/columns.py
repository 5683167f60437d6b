"""Column types and defaults every table module shares. Table modules import these from here,
not from models.db, so models.db can import every table module (to register them all) without
an import cycle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class BaseUnits(sa.types.TypeDecorator[int]):
    """uint256-capable integer column: NUMERIC(78, 0) in PostgreSQL, ``int`` in Python."""

    impl = sa.Numeric(78, 0)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else int(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else int(value)


def timestamp_field(**kw: Any) -> Any:
    """A timezone-aware timestamp column defaulting to now (UTC)."""
    return Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True), **kw)
