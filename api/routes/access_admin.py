"""Admins (role ADMIN, scope `admin`): API keys, users and their roles, blocks and freezes.

A blocked user can still read; nothing new is accepted from them and nothing of theirs is signed
(in-flight withdrawals stop before signing with USER_BLOCKED). A frozen wallet refuses new
withdrawals and signs nothing (WALLET_FROZEN) until unfrozen; its owner cannot unfreeze it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select

from api.deps import CallerDep, SessionDep
from core.errors import ApiKeyNotFound, UserNotFound, ValidationFailed, WalletNotFound
from db import audit
from db.access import create_api_key, revoke_api_key, upsert_user
from models.access import ApiKey, User
from models.db import Wallet, utcnow
from models.schemas import WalletPublic

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] | None = Field(default=None, max_length=16, description="default: every scope the owner's roles allow")
    ip_allowlist: list[str] = Field(default_factory=list, max_length=64, description="CIDRs; empty: any address")
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyPublic(BaseModel):
    id: str
    prefix: str
    name: str
    owner: str
    scopes: list[str]
    ip_allowlist: list[str]
    expires_at: datetime | None
    last_used_at: datetime | None
    last_used_ip: str | None
    revoked_at: datetime | None
    revoked_by: str | None
    created_by: str
    created_at: datetime


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="the key itself: shown this once, stored only as its hash")


class ApiKeyList(BaseModel):
    items: list[ApiKeyPublic]


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[str] = Field(max_length=8, description="USER, APPROVER, OPERATOR, ADMIN")


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


class UserPublic(BaseModel):
    id: str
    roles: list[str]
    status: str
    blocked_at: datetime | None
    blocked_by: str | None
    blocked_reason: str | None
    oidc_issuer: str | None
    created_at: datetime
    updated_at: datetime


class UserList(BaseModel):
    items: list[UserPublic]


def _key_public(row: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(row, from_attributes=True)


@router.get("/api-keys", response_model=ApiKeyList)
async def list_api_keys(_: CallerDep, session: SessionDep, owner: str | None = None) -> ApiKeyList:
    query = select(ApiKey).order_by(col(ApiKey.created_at).desc())
    if owner:
        query = query.where(ApiKey.owner == owner)
    return ApiKeyList(items=[_key_public(k) for k in (await session.exec(query.limit(1000))).all()])


@router.post("/api-keys", response_model=ApiKeyCreated, status_code=status.HTTP_201_CREATED)
async def new_api_key(body: ApiKeyCreate, caller: CallerDep, session: SessionDep) -> ApiKeyCreated:
    expires_at = None if body.expires_in_days is None else datetime.now(UTC) + timedelta(days=body.expires_in_days)
    row, key = await create_api_key(
        session,
        owner=body.owner,
        name=body.name,
        created_by=caller.id,
        scopes=body.scopes,
        ip_allowlist=body.ip_allowlist,
        expires_at=expires_at,
    )
    await audit.append(
        session,
        actor=caller.id,
        action="apikey.created",
        object_type="api_key",
        object_id=row.id,
        details={"owner": row.owner, "prefix": row.prefix, "scopes": ",".join(row.scopes), "name": row.name},
    )
    await session.commit()
    return ApiKeyCreated(**_key_public(row).model_dump(), key=key)


@router.post("/api-keys/{key_id}/revoke", response_model=ApiKeyPublic)
async def revoke(key_id: str, caller: CallerDep, session: SessionDep) -> ApiKeyPublic:
    row = await revoke_api_key(session, key_id, caller.id)
    if row is None:
        raise ApiKeyNotFound("no such API key", key_id=key_id)
    await audit.append(
        session, actor=caller.id, action="apikey.revoked", object_type="api_key", object_id=row.id, details={"owner": row.owner, "prefix": row.prefix}
    )
    await session.commit()
    return _key_public(row)


@router.get("/users", response_model=UserList)
async def list_users(_: CallerDep, session: SessionDep, status_filter: str | None = None) -> UserList:
    query = select(User).order_by(col(User.created_at))
    if status_filter:
        query = query.where(User.status == status_filter.upper())
    return UserList(items=[UserPublic.model_validate(u, from_attributes=True) for u in (await session.exec(query.limit(1000))).all()])


async def _user(session: SessionDep, user_id: str) -> User:
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        raise UserNotFound("no such user", user=user_id)
    return user


@router.get("/users/{user_id}", response_model=UserPublic)
async def get_user(user_id: str, _: CallerDep, session: SessionDep) -> UserPublic:
    return UserPublic.model_validate(await _user(session, user_id), from_attributes=True)


@router.put("/users/{user_id}", response_model=UserPublic)
async def put_user(user_id: str, body: UserUpdate, caller: CallerDep, session: SessionDep) -> UserPublic:
    """Create the user, or replace its roles (an OIDC user's roles come from its tokens)."""
    if not user_id.strip() or len(user_id) > 200:
        raise ValidationFailed("a user id is 1 to 200 characters", field="user_id")
    user = await upsert_user(session, user_id, body.roles)
    await audit.append(
        session, actor=caller.id, action="user.roles_set", object_type="user", object_id=user_id, details={"roles": ",".join(sorted(user.roles))}
    )
    await session.commit()
    return UserPublic.model_validate(user, from_attributes=True)


@router.post("/users/{user_id}/block", response_model=UserPublic)
async def block_user(user_id: str, body: Reason, caller: CallerDep, session: SessionDep) -> UserPublic:
    """Block (creating the user if it never called yet, so a block can come first)."""
    if not user_id.strip() or len(user_id) > 200:
        raise ValidationFailed("a user id is 1 to 200 characters", field="user_id")
    user = await upsert_user(session, user_id, None)
    if user.status != "BLOCKED":
        user.status, user.blocked_at, user.blocked_by, user.blocked_reason = "BLOCKED", utcnow(), caller.id, body.reason
        user.updated_at = utcnow()
        session.add(user)
        await audit.append(session, actor=caller.id, action="user.blocked", object_type="user", object_id=user_id, details={"reason": body.reason})
    await session.commit()
    return UserPublic.model_validate(user, from_attributes=True)


@router.post("/users/{user_id}/unblock", response_model=UserPublic)
async def unblock_user(user_id: str, caller: CallerDep, session: SessionDep) -> UserPublic:
    user = await _user(session, user_id)
    user.status, user.blocked_at, user.blocked_by, user.blocked_reason = "ACTIVE", None, None, None
    user.updated_at = utcnow()
    session.add(user)
    await audit.append(session, actor=caller.id, action="user.unblocked", object_type="user", object_id=user_id)
    await session.commit()
    return UserPublic.model_validate(user, from_attributes=True)


async def _wallet(session: SessionDep, wallet_id: str) -> Wallet:
    wallet = await session.get(Wallet, wallet_id, with_for_update=True)
    if wallet is None:
        raise WalletNotFound("wallet not found", wallet_id=wallet_id)
    return wallet


@router.post("/wallets/{wallet_id}/freeze", response_model=WalletPublic)
async def freeze_wallet(wallet_id: str, body: Reason, caller: CallerDep, session: SessionDep) -> WalletPublic:
    wallet = await _wallet(session, wallet_id)
    if wallet.frozen_at is None:
        wallet.frozen_at, wallet.frozen_by, wallet.frozen_reason, wallet.updated_at = utcnow(), caller.id, body.reason, utcnow()
        session.add(wallet)
        await audit.append(
            session, actor=caller.id, action="wallet.frozen", object_type="wallet", object_id=wallet_id, details={"reason": body.reason}
        )
    await session.commit()
    return WalletPublic.model_validate(wallet, from_attributes=True)


@router.post("/wallets/{wallet_id}/unfreeze", response_model=WalletPublic)
async def unfreeze_wallet(wallet_id: str, caller: CallerDep, session: SessionDep) -> WalletPublic:
    wallet = await _wallet(session, wallet_id)
    wallet.frozen_at, wallet.frozen_by, wallet.frozen_reason, wallet.updated_at = None, None, None, utcnow()
    session.add(wallet)
    await audit.append(session, actor=caller.id, action="wallet.unfrozen", object_type="wallet", object_id=wallet_id)
    await session.commit()
    return WalletPublic.model_validate(wallet, from_attributes=True)
