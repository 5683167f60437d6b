"""The audit log over HTTP: read it with filters, and verify its hash chain (administrators)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import OwnerDep, SessionDep
from api.limits import INT64_MAX
from db import audit

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditEntryPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    entries: list[AuditEntryPublic]
    next_before_id: int | None  # pass as before_id for the next (older) page


class AuditVerification(BaseModel):
    ok: bool
    checked: int
    first_broken_id: int | None
    reason: str


@router.get("", response_model=AuditPage)
async def list_entries(
    caller: OwnerDep,
    session: SessionDep,
    object_id: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Newest first; filter by object (a withdrawal id...), action (`withdrawal.signed`...) or actor.
    Administrators only (api/permissions.py)."""
    rows = await audit.entries(session, object_id=object_id, action=action, actor=actor, limit=limit, before_id=before_id)
    return AuditPage(
        entries=[AuditEntryPublic.model_validate(r, from_attributes=True) for r in rows],
        next_before_id=rows[-1].id if len(rows) == limit else None,
    )


@router.get("/verify", response_model=AuditVerification)
async def verify(caller: OwnerDep, session: SessionDep) -> AuditVerification:
    """Walk the whole chain; the first entry that was edited, removed or reordered."""
    result = await audit.verify(session)
    return AuditVerification(ok=result.ok, checked=result.checked, first_broken_id=result.first_broken_id, reason=result.reason)
