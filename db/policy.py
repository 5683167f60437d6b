"""The policy in PostgreSQL: versions of the document, rolling-window totals, address books.

Every change to the policy or to an address book is audited (db/audit.py) in the transaction
that makes it, so a change and its audit entry commit together or not at all.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import AddressBookEntryNotFound, PolicyNotFound, PolicyVersionConflict, ValidationFailed
from core.policy import Counted, Per, PolicyDocument
from core.policy_engine import Totals, Window
from db import audit
from models.db import utcnow
from models.policy import AddressBookApproval, AddressBookEntry, PolicySpend, PolicyVersion

# --- the document ----------------------------------------------------------------------------


async def current(session: AsyncSession) -> tuple[int, PolicyDocument]:
    """The latest version and its document; version 0 (no rules, default ALLOW) before any change."""
    row = (await session.exec(select(PolicyVersion).order_by(col(PolicyVersion.version).desc()).limit(1))).first()
    if row is None:
        return 0, PolicyDocument()
    return row.version, PolicyDocument.model_validate(row.document)


async def version(session: AsyncSession, number: int) -> PolicyVersion:
    if number == 0:
        return PolicyVersion(version=0, author="custody", summary="no policy yet", document=PolicyDocument().model_dump(mode="json"))
    row = await session.get(PolicyVersion, number)
    if row is None:
        raise PolicyNotFound(f"no policy version {number}", version=number)
    return row


async def versions(session: AsyncSession, *, limit: int = 50, before: int | None = None) -> list[PolicyVersion]:
    query = select(PolicyVersion).order_by(col(PolicyVersion.version).desc()).limit(limit)
    if before is not None:
        query = query.where(col(PolicyVersion.version) < before)
    return list((await session.exec(query)).all())


async def publish(
    session: AsyncSession,
    document: PolicyDocument,
    *,
    author: str,
    summary: str,
    base_version: int | None = None,
    details: dict[str, str] | None = None,
) -> PolicyVersion:
    """Store `document` as the next version (in the caller's transaction). With `base_version`,
    refuse if someone published since (two admins editing at once lose nothing silently)."""
    # One publisher at a time: versions are consecutive and each is based on the one before.
    await session.exec(select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended("policy:change", 0))))
    latest, _ = await current(session)
    if base_version is not None and base_version != latest:
        raise PolicyVersionConflict(
            f"the policy is at version {latest}, not {base_version}: re-read it and apply the change again",
            current_version=latest,
            base_version=base_version,
        )
    row = PolicyVersion(version=latest + 1, author=author, summary=summary, document=document.model_dump(mode="json"))
    session.add(row)
    await session.flush()
    await audit.append(
        session,
        actor=author,
        action="policy.changed",
        object_type="policy",
        object_id=str(row.version),
        details={"summary": summary, "previous_version": str(latest), **(details or {})},
    )
    return row


# --- rolling windows ---------------------------------------------------------------------------


async def window_totals(
    session: AsyncSession,
    window: Window,
    *,
    chain: str,
    asset: str,
    wallet_id: str,
    owner: str,
    as_of: tuple[int, datetime] | None = None,
) -> Totals:
    """What the window holds of withdrawals in the same chain and asset, per wallet, owner or
    for everyone. `as_of` (a spend's id and time): only what was decided before it, in the
    window ending at its time, i.e. exactly what its own decision saw (minus releases).

    The clock is PostgreSQL's `clock_timestamp()`, read after the decision lock is held (never
    `now()`, the transaction's start: a decision that started earlier but committed later would
    otherwise look like the future). Decisions a window connects are serialized (the locks of
    activities/policy.py `decision_locks`), so every spend this window counts is written and in
    the past; only `id` orders them for a re-check."""
    s = PolicySpend.__table__.c  # type: ignore[attr-defined]
    end = sa.literal(as_of[1], sa.DateTime(timezone=True)) if as_of else sa.func.clock_timestamp()
    start = end - sa.literal(timedelta(seconds=window.seconds), sa.Interval())
    query = sa.select(sa.func.coalesce(sa.func.sum(s.amount), 0), sa.func.count(), sa.func.min(s.at)).where(
        s.chain == chain,
        s.asset == asset,
        s.state == "ACTIVE",
        s.internal.is_(False),
        s.at > start,
    )
    if window.per == Per.WALLET:
        query = query.where(s.wallet_id == wallet_id)
    elif window.per == Per.OWNER:
        query = query.where(s.owner == owner)
    if window.counted == Counted.UNAPPROVED:
        query = query.where(s.approval_required.is_(False))
    if as_of is not None:
        query = query.where(s.id < as_of[0])
    amount, count, oldest = (await session.exec(query)).one()  # type: ignore[call-overload]
    return Totals(amount=int(amount), count=int(count), oldest_at=oldest)


async def release_spend(session: AsyncSession, withdrawal_id: str) -> None:
    """The withdrawal paid nothing: it no longer counts in any window."""
    await session.exec(
        sa.update(PolicySpend)
        .where(col(PolicySpend.withdrawal_id) == withdrawal_id, col(PolicySpend.state) == "ACTIVE")
        .values(state="RELEASED", released_at=sa.func.now())
    )


# --- address books -----------------------------------------------------------------------------


async def live_entry(session: AsyncSession, owner: str, chain: str, address: str) -> AddressBookEntry | None:
    return (
        await session.exec(
            select(AddressBookEntry).where(
                AddressBookEntry.owner == owner,
                AddressBookEntry.chain == chain,
                AddressBookEntry.address == address,
                col(AddressBookEntry.removed_at).is_(None),
            )
        )
    ).first()


def usable(entry: AddressBookEntry | None, now: datetime) -> tuple[bool, str]:
    """(usable, what to say about it)."""
    if entry is None:
        return False, "not in the owner's address book"
    if entry.approved_at is not None:
        return True, f"address-book entry {entry.id} (approved by its quorum)"
    if entry.usable_from <= now:
        return True, f"address-book entry {entry.id} (cooled off)"
    return False, f"address-book entry {entry.id}, cooling until {entry.usable_from.isoformat()} (or a quorum's approval)"


async def add_entry(session: AsyncSession, *, owner: str, chain: str, address: str, label: str, by: str, cooling_seconds: int) -> AddressBookEntry:
    if await live_entry(session, owner, chain, address) is not None:
        raise ValidationFailed("this address is already in the address book", field="address", chain=chain)
    now = utcnow()
    entry = AddressBookEntry(
        id=str(uuid.uuid4()),
        owner=owner,
        chain=chain,
        address=address,
        label=label,
        created_by=by,
        created_at=now,
        usable_from=now + timedelta(seconds=cooling_seconds),
    )
    session.add(entry)
    await session.flush()
    await audit.append(
        session,
        actor=by,
        action="address_book.added",
        object_type="address_book_entry",
        object_id=entry.id,
        details={"owner": owner, "chain": chain, "address": address, "label": label, "usable_from": entry.usable_from.isoformat()},
    )
    return entry


async def entry_of(session: AsyncSession, entry_id: str, *, owner: str | None = None) -> AddressBookEntry:
    """The entry (of `owner` when given: others' answer 404, ids do not leak)."""
    entry = await session.get(AddressBookEntry, entry_id, with_for_update=True)
    if entry is None or (owner is not None and entry.owner != owner):
        raise AddressBookEntryNotFound("no such address-book entry", entry_id=entry_id)
    return entry


async def remove_entry(session: AsyncSession, entry: AddressBookEntry, by: str) -> AddressBookEntry:
    if entry.removed_at is None:
        entry.removed_at, entry.removed_by = utcnow(), by
        session.add(entry)
        await audit.append(session, actor=by, action="address_book.removed", object_type="address_book_entry", object_id=entry.id)
    return entry


async def approvals_of(session: AsyncSession, entry_id: str) -> list[AddressBookApproval]:
    rows = await session.exec(select(AddressBookApproval).where(AddressBookApproval.entry_id == entry_id).order_by(col(AddressBookApproval.id)))
    return list(rows.all())


async def record_approval(
    session: AsyncSession, entry: AddressBookEntry, *, approver: str, roles: list[str], via: str, quorum_count: int
) -> AddressBookEntry:
    """One approval; the entry is usable at once when the quorum is reached."""
    session.add(AddressBookApproval(entry_id=entry.id, approver=approver, approver_roles=roles, via=via))
    await session.flush()
    count = len(await approvals_of(session, entry.id))
    details = {"approvals": str(count), "quorum": str(quorum_count)}
    if entry.approved_at is None and count >= quorum_count:
        entry.approved_at = utcnow()
        session.add(entry)
        details["usable"] = "now"
    await audit.append(
        session,
        actor=approver,
        action="address_book.approved",
        object_type="address_book_entry",
        object_id=entry.id,
        details=details,
    )
    return entry


async def entries(session: AsyncSession, *, owner: str | None, chain: str | None = None, include_removed: bool = False) -> list[AddressBookEntry]:
    query = select(AddressBookEntry).order_by(col(AddressBookEntry.created_at))
    if owner is not None:
        query = query.where(AddressBookEntry.owner == owner)
    if chain is not None:
        query = query.where(AddressBookEntry.chain == chain)
    if not include_removed:
        query = query.where(col(AddressBookEntry.removed_at).is_(None))
    return list((await session.exec(query)).all())
