"""Address books: destinations an owner trusts, per chain. A new entry is usable after the
policy's cooling period (`address_book.cooling_seconds`, 48 h by default), or at once when the
policy's address-book quorum of approvers approved it; the owner and whoever added it never
count. Rules match on it (`destination: ADDRESS_BOOK`) and allowlist-only sources pay nothing
else. Owners add and remove their entries; approvers see and approve anyone's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from api.deps import CallerDep, SessionDep, StateDep
from core.errors import NotAnApprover, ValidationFailed
from core.identity import Identity
from db import policy as store
from models.db import utcnow
from models.policy import AddressBookEntry

router = APIRouter(prefix="/v1/address-book", tags=["address book"])


class AddressBookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain: str = Field(min_length=1, max_length=64)
    address: str = Field(min_length=1, max_length=200)
    label: str = Field(default="", max_length=200)


class AddressBookEntryPublic(BaseModel):
    id: str
    owner: str
    chain: str
    address: str
    label: str
    created_by: str
    created_at: datetime
    usable_from: datetime
    approved_at: datetime | None
    removed_at: datetime | None
    usable: bool
    status: str = Field(description="why it is (not) usable now")
    approvals: list[str]
    quorum: dict[str, Any]


class AddressBookList(BaseModel):
    items: list[AddressBookEntryPublic]


async def _public(session: SessionDep, entry: AddressBookEntry) -> AddressBookEntryPublic:
    _, document = await store.current(session)
    usable, status_text = store.usable(entry, utcnow()) if entry.removed_at is None else (False, "removed")
    return AddressBookEntryPublic(
        **entry.model_dump(exclude={"removed_by"}),
        usable=usable,
        status=status_text,
        approvals=[a.approver for a in await store.approvals_of(session, entry.id)],
        quorum=document.address_book.quorum.model_dump(mode="json", exclude_none=True),
    )


@router.get("", response_model=AddressBookList)
async def list_entries(
    caller: CallerDep, session: SessionDep, owner: str | None = None, chain: str | None = None, include_removed: bool = False
) -> AddressBookList:
    """The caller's entries; approvers and operators read anyone's (`owner` filters)."""
    whose = owner if caller.any_owner else caller.id
    rows = await store.entries(session, owner=whose, chain=chain.lower() if chain else None, include_removed=include_removed)
    return AddressBookList(items=[await _public(session, e) for e in rows])


@router.post("", response_model=AddressBookEntryPublic, status_code=status.HTTP_201_CREATED)
async def add_entry(body: AddressBookCreate, caller: CallerDep, state: StateDep, session: SessionDep) -> AddressBookEntryPublic:
    chain = state.chains.get(body.chain.lower())
    address = chain.normalize_address(body.address)
    _, document = await store.current(session)
    entry = await store.add_entry(
        session,
        owner=caller.id,
        chain=chain.name,
        address=address,
        label=body.label,
        by=caller.id,
        cooling_seconds=document.address_book.cooling_seconds,
    )
    await session.commit()
    return await _public(session, entry)


@router.delete("/{entry_id}", response_model=AddressBookEntryPublic)
async def remove_entry(entry_id: str, caller: CallerDep, session: SessionDep) -> AddressBookEntryPublic:
    entry = await store.entry_of(session, entry_id, owner=caller.id)
    await store.remove_entry(session, entry, caller.id)
    await session.commit()
    return await _public(session, entry)


@router.post("/{entry_id}/approve", response_model=AddressBookEntryPublic)
async def approve_entry(entry_id: str, caller: CallerDep, session: SessionDep) -> AddressBookEntryPublic:
    """One approval of the policy's address-book quorum; at the quorum the entry is usable at once."""
    entry = await store.entry_of(session, entry_id)
    if entry.removed_at is not None:
        raise ValidationFailed("this entry was removed", entry_id=entry_id)
    _, document = await store.current(session)
    quorum = document.address_book.quorum
    _refuse_ineligible(caller, entry, quorum.role.value if quorum.role else None, document.groups.get(quorum.group or "", None))
    if caller.id in [a.approver for a in await store.approvals_of(session, entry.id)]:
        raise NotAnApprover(f"{caller.id} approved this entry already: a quorum needs distinct approvers", entry_id=entry_id)
    await store.record_approval(session, entry, approver=caller.id, roles=caller.role_names, via=caller.via, quorum_count=quorum.count)
    await session.commit()
    return await _public(session, entry)


def _refuse_ineligible(caller: Identity, entry: AddressBookEntry, role: str | None, members: list[str] | None) -> None:
    if caller.id in (entry.owner, entry.created_by):
        raise NotAnApprover("the owner (or whoever added the entry) cannot approve it", entry_id=entry.id)
    if members is not None and caller.id not in members:
        raise NotAnApprover("only members of the address-book quorum's group approve entries", entry_id=entry.id)
    if members is None and role is not None and role not in caller.role_names:
        raise NotAnApprover(f"only holders of role {role} approve entries", entry_id=entry.id)
