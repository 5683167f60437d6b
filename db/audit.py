"""Append to and verify the tamper-evident audit log (models/audit.py).

Each entry's hash is SHA-256 over its canonical content and the previous entry's hash, so editing,
deleting or reordering any entry breaks every link after it; `verify` walks the chain and names the
first broken one. Appends happen inside the transaction that makes the change (the change and its
entry commit together or not at all) and are serialized by an advisory lock, so the chain has one
order. The entries a transaction appends are chained and written as it commits (one lock, then
one statement per entry that reads the chain's head, hashes and inserts), so the lock every
writer shares is held from then to the commit only, not while the rest of the transaction runs.
The table itself refuses UPDATE, DELETE and TRUNCATE (a trigger), so breaking it takes a
superuser disabling the trigger: exactly what `verify` is there to catch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.audit import AuditEntry
from models.db import utcnow

GENESIS = "0" * 64
VERIFY_BATCH = 1000


def entry_hash(prev_hash: str, at: datetime, actor: str, action: str, object_type: str, object_id: str, details: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON array [prev_hash, at, actor, action, object_type, object_id,
    details] (sorted keys, no spaces): `_chained_insert` has PostgreSQL compute the same."""
    content = '["' + prev_hash + '",' + _content_after_prev(at, actor, action, object_type, object_id, details)
    return hashlib.sha256(content.encode()).hexdigest()


def _content_after_prev(at: datetime, actor: str, action: str, object_type: str, object_id: str, details: dict[str, Any]) -> str:
    """The canonical content after `["<prev_hash>",`: a hex hash needs no escaping, so the whole
    is '["' + prev_hash + '",' + this (ASCII: json.dumps escapes the rest)."""
    rest = json.dumps(
        [at.isoformat(timespec="microseconds"), actor, action, object_type, object_id, details], sort_keys=True, separators=(",", ":"), default=str
    )
    return rest[1:]


_PENDING = "audit_pending"


async def append(
    session: AsyncSession, *, actor: str, action: str, object_type: str, object_id: str, details: dict[str, Any] | None = None
) -> AuditEntry:
    """Add one entry in the caller's transaction (its commit chains and writes it: `_chain_pending`);
    the entry returned has its id, time and hashes once that transaction has committed."""
    clean = json.loads(json.dumps(details or {}, default=str))  # what JSONB will give back
    entry = AuditEntry(actor=actor, action=action, object_type=object_type, object_id=object_id, details=clean, prev_hash="", hash="")
    session.info.setdefault(_PENDING, []).append(entry)
    return entry


@event.listens_for(Session, "before_commit")
def _chain_pending(session: Session) -> None:
    """Chain the transaction's entries to the log's head, under the lock that orders the log,
    and add them to the commit's flush. Runs inside the commit (within asyncio's greenlet, so
    synchronous SQL here is the async session's own connection)."""
    pending: list[AuditEntry] = session.info.pop(_PENDING, [])
    if not pending:
        return
    # One chain, one order: appends serialize until their transaction ends. Each insert below
    # is a statement of its own, so its snapshot is taken once the lock is held: it reads the
    # head as the previous holder committed it.
    session.execute(select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended("audit_log", 0))))
    at = utcnow()
    for entry in pending:
        entry.at = at
        entry.id, entry.prev_hash, entry.hash = session.execute(_chained_insert(entry)).one()


def _chained_insert(entry: AuditEntry) -> sa.Insert:
    """INSERT of `entry` chained to the log's head in the statement itself: the head read, the
    SHA-256 over the previous hash and the entry's canonical content (`entry_hash`, the part
    after the previous hash written here), one round trip instead of a read and an insert."""
    head = select(AuditEntry.hash).order_by(col(AuditEntry.id).desc()).limit(1).scalar_subquery()
    prev = sa.func.coalesce(head, GENESIS)
    content = (
        sa.literal('["')
        + prev
        + sa.literal('",')
        + sa.literal(_content_after_prev(entry.at, entry.actor, entry.action, entry.object_type, entry.object_id, entry.details))
    )
    digest = sa.func.encode(sa.func.sha256(sa.func.convert_to(content, "UTF8")), "hex")
    values = sa.select(
        sa.literal(entry.at, sa.DateTime(timezone=True)),
        sa.literal(entry.actor),
        sa.literal(entry.action),
        sa.literal(entry.object_type),
        sa.literal(entry.object_id),
        sa.literal(entry.details, JSONB),
        prev,
        digest,
    )
    columns = ["at", "actor", "action", "object_type", "object_id", "details", "prev_hash", "hash"]
    return sa.insert(AuditEntry).from_select(columns, values).returning(col(AuditEntry.id), col(AuditEntry.prev_hash), col(AuditEntry.hash))


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)


@dataclass
class Verification:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    reason: str = ""


async def verify(session: AsyncSession) -> Verification:
    """Walk the whole chain in order; the first entry whose link or content does not hold."""
    prev, checked, after = GENESIS, 0, 0
    while True:
        rows = (await session.exec(select(AuditEntry).where(col(AuditEntry.id) > after).order_by(col(AuditEntry.id)).limit(VERIFY_BATCH))).all()
        if not rows:
            return Verification(ok=True, checked=checked)
        for entry in rows:
            assert entry.id is not None
            if entry.prev_hash != prev:
                return Verification(False, checked, entry.id, "its link to the previous entry is broken (an entry was removed or reordered)")
            expected = entry_hash(prev, entry.at, entry.actor, entry.action, entry.object_type, entry.object_id, entry.details)
            if entry.hash != expected:
                return Verification(False, checked, entry.id, "its content no longer matches its hash (it was edited)")
            prev, checked, after = entry.hash, checked + 1, entry.id


async def entries(
    session: AsyncSession,
    *,
    object_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if object_id is not None:
        query = query.where(AuditEntry.object_id == object_id)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if actor is not None:
        query = query.where(AuditEntry.actor == actor)
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    return list((await session.exec(query)).all())


__all__ = ["GENESIS", "Verification", "append", "entries", "entry_hash", "verify"]
