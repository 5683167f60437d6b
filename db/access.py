"""Users and API keys in PostgreSQL: create, find, revoke, and the development seed.

An API key is `ck_<10 hex>_<43 urlsafe>`; the first part (`ck_<10 hex>`) is its public prefix,
stored and listed, and the whole key is stored only as its SHA-256 (a key carries 256 random
bits, so a plain hash is enough: nothing to brute-force, unlike a password). The key itself is
shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.errors import UserNotFound, ValidationFailed
from core.identity import Role, Scope, parse_roles, scopes_of
from db.engine import SessionFactory
from models.access import ApiKey, User
from models.db import utcnow

KEY_MARK = "ck_"

# Development only: seeded by `./dev up` and by the tests' fixtures, never by a migration; a
# production API refuses to start while any of them is active in its database.
DEV_USERS: dict[str, list[Role]] = {
    "alice": [Role.USER],
    "bob": [Role.USER],
    "ops": [Role.USER, Role.APPROVER, Role.OPERATOR],
    "admin": [Role.ADMIN],
}
DEV_KEYS: dict[str, str] = {
    "dev-alice-key": "alice",
    "dev-bob-key": "bob",
    "dev-ops-key": "ops",
    "dev-admin-key": "admin",
}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def prefix_of(key: str) -> str:
    """The public part of a key: `ck_<10 hex>` for keys made here, the first 8 characters of
    any other (the development keys)."""
    if key.startswith(KEY_MARK) and key.find("_", len(KEY_MARK)) > len(KEY_MARK):
        return key[: key.index("_", len(KEY_MARK))]
    return key[:8]


def new_key() -> str:
    return f"{KEY_MARK}{secrets.token_hex(5)}_{secrets.token_urlsafe(32)}"


def key_matches(row: ApiKey, key: str) -> bool:
    return hmac.compare_digest(row.key_hash, hash_key(key))


def checked_networks(values: Iterable[str]) -> list[str]:
    """CIDRs (or single addresses) in canonical form; a malformed one is a validation error."""
    networks = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError as e:
            raise ValidationFailed(f"not an IP network: {value!r}", field="ip_allowlist") from e
    return networks


def ip_allowed(allowlist: list[str], ip: str | None) -> bool:
    if not allowlist:
        return True
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n) for n in allowlist)


def checked_scopes(scopes: Iterable[str] | None, roles: frozenset[Role]) -> list[str]:
    """The key's scopes: those asked for (all its owner's roles allow when None), each one
    allowed by one of the roles, else a validation error that says which role it needs."""
    allowed = scopes_of(roles)
    if scopes is None:
        return sorted(s.value for s in allowed)
    chosen = []
    for name in scopes:
        try:
            scope = Scope(name)
        except ValueError as e:
            raise ValidationFailed(f"unknown scope {name!r}", field="scopes", known=[s.value for s in Scope]) from e
        if scope not in allowed:
            raise ValidationFailed(
                f"scope {scope.value} needs a role the owner does not have",
                field="scopes",
                owner_roles=sorted(r.value for r in roles),
            )
        chosen.append(scope.value)
    return sorted(set(chosen))


async def upsert_user(session: AsyncSession, user_id: str, roles: Iterable[str] | None) -> User:
    """The user, created if missing; `roles` (when given) replace the user's roles."""
    wanted = None
    if roles is not None:
        roles = list(roles)
        unknown = [r for r in roles if str(r).upper() not in Role.__members__]
        if unknown:
            raise ValidationFailed(f"unknown roles {unknown}", field="roles", known=[r.value for r in Role])
        wanted = sorted(r.value for r in parse_roles(roles))
    now = utcnow()
    await session.exec(  # type: ignore[call-overload]
        insert(User.__table__)  # type: ignore[attr-defined]
        .values(id=user_id, roles=wanted or [], status="ACTIVE", created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    user = await session.get(User, user_id, with_for_update=True)
    assert user is not None
    if wanted is not None and user.roles != wanted:
        user.roles, user.updated_at = wanted, now
        session.add(user)
    return user


async def create_api_key(
    session: AsyncSession,
    *,
    owner: str,
    name: str,
    created_by: str,
    scopes: Iterable[str] | None = None,
    ip_allowlist: Iterable[str] = (),
    expires_at: datetime | None = None,
    key: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key for an existing user: (row, the key itself, to show once)."""
    user = await session.get(User, owner)
    if user is None:
        raise UserNotFound("no such user: create it first (with its roles)", user=owner)
    key = key or new_key()
    row = ApiKey(
        id=str(uuid.uuid4()),
        prefix=prefix_of(key),
        key_hash=hash_key(key),
        name=name,
        owner=owner,
        scopes=checked_scopes(scopes, parse_roles(user.roles)),
        ip_allowlist=checked_networks(ip_allowlist),
        expires_at=expires_at,
        created_by=created_by,
    )
    session.add(row)
    return row, key


async def revoke_api_key(session: AsyncSession, key_id: str, by: str) -> ApiKey | None:
    row = await session.get(ApiKey, key_id, with_for_update=True)
    if row is not None and row.revoked_at is None:
        row.revoked_at, row.revoked_by = utcnow(), by
        session.add(row)
    return row


async def find_api_key(session: AsyncSession, key: str) -> tuple[ApiKey, User] | None:
    rows = await session.exec(select(ApiKey, User).join(User, col(User.id) == col(ApiKey.owner)).where(ApiKey.prefix == prefix_of(key)))
    for row, user in rows.all():
        if key_matches(row, key):
            return row, user
    return None


async def seed_dev_keys(sessions: SessionFactory) -> None:
    """The development users and keys (idempotent). Only `./dev up` and the tests call this."""
    async with sessions() as session, session.begin():
        for user_id, roles in DEV_USERS.items():
            await upsert_user(session, user_id, [r.value for r in roles])
        for key, owner in DEV_KEYS.items():
            existing = (await session.exec(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))).first()
            if existing is None:
                await create_api_key(session, owner=owner, name="development", created_by="dev-seed", key=key)


async def active_dev_keys(sessions: SessionFactory) -> list[str]:
    """Prefixes of development keys that would authenticate: compared by hash, so the same key
    under another name or owner is found too."""
    async with sessions() as session:
        rows = await session.exec(
            select(ApiKey.prefix).where(col(ApiKey.key_hash).in_([hash_key(k) for k in DEV_KEYS]), col(ApiKey.revoked_at).is_(None))
        )
        return list(rows.all())


async def touch_api_key(sessions: SessionFactory, key_id: str, ip: str | None) -> None:
    """Record a use (at most once a minute per key, so reads stay reads)."""
    async with sessions() as session, session.begin():
        await session.exec(  # type: ignore[call-overload]
            sa.update(ApiKey)
            .where(
                col(ApiKey.id) == key_id,
                sa.or_(col(ApiKey.last_used_at).is_(None), col(ApiKey.last_used_at) < sa.func.now() - sa.text("interval '60 seconds'")),
            )
            .values(last_used_at=sa.func.now(), last_used_ip=ip)
        )
