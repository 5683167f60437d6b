"""Authentication (who is calling) and authorization (may they call this route), as one FastAPI
dependency used by every route that takes an identity.

Order per request: the client IP's bucket; 429 at once if that IP spent its failed-auth bucket;
the credential (API key from PostgreSQL, or an OIDC JWT); the identity's bucket; the route's
grants (api/permissions.py); a blocked user may only read; the route's stricter bucket.
401 UNAUTHORIZED: no valid identity (missing, unknown, expired, revoked). 403 FORBIDDEN: an
identity without the role or scope (or calling from outside its key's IP allowlist).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from fastapi import Request
from sqlmodel import select

from api.oidc import looks_like_jwt
from api.permissions import EXTRA_BUCKETS, PERMISSIONS, PUBLIC, SIGNED_IN, Grant
from core import metrics
from core.errors import Forbidden, Unauthorized, UserBlocked
from core.identity import Identity, Scope, parse_roles, scopes_of
from db import audit
from db.access import find_api_key, ip_allowed, touch_api_key
from models.access import ApiKey, User

log = logging.getLogger("custody.api.auth")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LAST_USED_EVERY = timedelta(seconds=60)


def route_key(request: Request) -> str:
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', request.url.path)}"


def client_ip(request: Request) -> str | None:
    """The peer address (behind a load balancer, run uvicorn with --forwarded-allow-ips so this
    is the client's, from X-Forwarded-For, and not the balancer's)."""
    return request.client.host if request.client else None


async def authorized(request: Request) -> Identity:
    state = request.app.state.custody
    key = route_key(request)
    write = request.method not in SAFE_METHODS
    ip = client_ip(request)
    identity = await authenticated(state, key, ip, write, lambda: _authenticate(request, state, ip))
    return await permitted(state, identity, key, write)


async def authenticated(state, route: str, ip: str | None, write: bool, credential: Callable[[], Awaitable[Identity]]) -> Identity:  # type: ignore[no-untyped-def]
    """The caller `credential()` proves, under the per-IP and failed-auth buckets; a refusal is
    counted, logged and audited. Shared by the API (a bearer credential) and the console (its
    sign-in form and its session cookie)."""
    limiter = state.limiter
    await limiter.take("per_ip", ip or "unknown", write=write)
    await limiter.refuse_if_spent("failed_auth", ip or "unknown", write=write)
    try:
        return await credential()
    except (Unauthorized, Forbidden) as e:
        metrics.AUTH_FAILURES.labels(reason=e.code.lower()).inc()
        log.warning("authentication refused", extra={"route": route, "ip": ip, "error": e.message})
        await limiter.take("failed_auth", ip or "unknown", write=write)  # bounds the audit entries below too
        async with state.sessions() as session, session.begin():
            await audit.append(
                session,
                actor=f"ip:{ip or 'unknown'}",
                action="auth.failed",
                object_type="route",
                object_id=route,
                details={"code": e.code, "reason": e.message},
            )
        raise


async def permitted(state, identity: Identity, route: str, write: bool) -> Identity:  # type: ignore[no-untyped-def]
    """`identity` allowed on `route` ("METHOD /path" of api/permissions.py), with `any_owner` set
    from the grants that allowed it; 403 otherwise. The console asks this with the API route
    each of its pages and actions stands for, so both answer to one table."""
    await state.limiter.take("per_identity", identity.id, write=write)
    rule = PERMISSIONS.get(route)
    if rule is None:
        raise Forbidden("this route has no permission rule: refused for everyone", route=route)
    if rule == PUBLIC or rule == SIGNED_IN:
        return identity
    assert isinstance(rule, tuple)
    granted = _granted(identity, rule)
    if not granted:
        metrics.AUTH_FAILURES.labels(reason="forbidden").inc()
        raise Forbidden(f"needs {_describe(rule)}", needs=[f"{g.role.value}+{g.scope.value}" for g in rule])
    if identity.blocked and write:
        raise UserBlocked("this user is blocked: nothing new can be done until an admin unblocks it", user=identity.id)
    bucket = EXTRA_BUCKETS.get(route)
    if bucket is not None:
        await state.limiter.take(bucket, identity.id, write=write)
    return dataclasses.replace(identity, any_owner=any(g.any_owner for g in granted))


def _granted(identity: Identity, rule: tuple[Grant, ...]) -> list[Grant]:
    return [g for g in rule if identity.can(g.scope, g.role)]


def may(identity: Identity, route: str) -> bool:
    """Whether `permitted` would let `identity` on `route` (no bucket taken): what the console
    uses to show only the links and buttons the viewer's role allows."""
    rule = PERMISSIONS.get(route)
    if rule is None:
        return False
    if rule == PUBLIC or rule == SIGNED_IN:
        return True
    assert isinstance(rule, tuple)
    return bool(_granted(identity, rule)) and not (identity.blocked and not route.startswith("GET "))


def _describe(rule: tuple[Grant, ...]) -> str:
    return " or ".join(f"role {g.role.value} with scope {g.scope.value}" for g in rule)


async def _authenticate(request: Request, state, ip: str | None) -> Identity:  # type: ignore[no-untyped-def]
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer credential (an API key or an OIDC token)")
    if len(token) > 8192:
        raise Unauthorized("bearer credential too long")
    if state.oidc is not None and looks_like_jwt(token):
        return await _oidc_identity(state, token, ip)
    return await _api_key_identity(state, token, ip)


async def _api_key_identity(state, token: str, ip: str | None) -> Identity:  # type: ignore[no-untyped-def]
    async with state.sessions() as session:
        found = await find_api_key(session, token)
    if found is None:
        raise Unauthorized("unknown API key")
    return await _identity_of_key(state, *found, ip)


async def api_key_identity(state, token: str, ip: str | None) -> Identity:  # type: ignore[no-untyped-def]
    """The identity an API key proves (the console's sign-in form takes one)."""
    return await _api_key_identity(state, token, ip)


async def api_key_identity_by_id(state, key_id: str, ip: str | None) -> Identity:  # type: ignore[no-untyped-def]
    """The identity of a key found by id: a console session holds its key's id, never the key,
    and is re-checked on every request, so a revoked key or a changed role counts at once."""
    async with state.sessions() as session:
        key = await session.get(ApiKey, key_id)
        user = None if key is None else await session.get(User, key.owner)
    if key is None or user is None:
        raise Unauthorized("unknown API key")
    return await _identity_of_key(state, key, user, ip)


async def _identity_of_key(state, key: ApiKey, user: User, ip: str | None) -> Identity:  # type: ignore[no-untyped-def]
    if key.revoked_at is not None:
        raise Unauthorized("API key revoked", key=key.prefix)
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        raise Unauthorized("API key expired", key=key.prefix)
    if not ip_allowed(key.ip_allowlist, ip):
        raise Forbidden("this API key may not be used from this address", key=key.prefix)
    if key.last_used_at is None or datetime.now(UTC) - key.last_used_at > LAST_USED_EVERY:
        await touch_api_key(state.sessions, key.id, ip)  # a write at most once a minute per key
    roles = parse_roles(user.roles)
    return Identity(
        id=user.id,
        roles=roles,
        scopes=frozenset(Scope(s) for s in key.scopes if s in Scope._value2member_map_),
        via=f"api_key:{key.prefix}",
        subject=key.id,
        ip=ip,
        blocked=user.status == "BLOCKED",
    )


async def _oidc_identity(state, token: str, ip: str | None) -> Identity:  # type: ignore[no-untyped-def]
    return await oidc_claims_identity(state, await state.oidc.verify(token), ip)


async def oidc_claims_identity(state, claims: dict, ip: str | None) -> Identity:  # type: ignore[no-untyped-def,type-arg]
    """The identity verified OIDC claims prove: a bearer token's, and a console session's
    signed in with OIDC (re-checked on every request like a key: a blocked user counts at once)."""
    verifier = state.oidc
    if verifier is None:
        raise Unauthorized("OIDC is no longer configured")
    user_id = verifier.user_id(claims)
    async with state.sessions() as session:
        user = (await session.exec(select(User).where(User.id == user_id))).first()
    if user is not None and user.oidc_subject is not None and (user.oidc_issuer, user.oidc_subject) != (claims["iss"], claims["sub"]):
        raise Unauthorized("this user id belongs to another identity")
    roles = verifier.roles(claims)
    return Identity(
        id=user_id,
        roles=roles,
        scopes=scopes_of(roles),
        via=f"oidc:{claims['iss']}",
        subject=claims["sub"],
        ip=ip,
        blocked=user is not None and user.status == "BLOCKED",
    )
