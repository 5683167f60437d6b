"""The audit log: every critical operation, append-only and hash-chained (db/audit.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.db import utcnow


class AuditEntry(SQLModel, table=True):
    """One operation: who (`actor`, an identity), when, what (`action`) on which object, with its
    details, and the SHA-256 `hash` of all that chained to the previous entry's hash. PostgreSQL
    refuses UPDATE, DELETE and TRUNCATE on the table (migration 0011)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True, sa_type=sa.BigInteger)
    at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    actor: str
    action: str = Field(index=True)
    object_type: str
    object_id: str = Field(index=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    prev_hash: str
    hash: str = Field(unique=True)
