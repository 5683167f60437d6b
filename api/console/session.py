"""Console sessions: a random session id in a signed, HttpOnly, SameSite=Strict cookie; the
session itself (the API key's id, never the key, and its CSRF token) in Redis, so signing out
ends it everywhere and it expires on its own.

CSRF: every form carries the session's token (session-bound), compared in constant time; the
sign-in form, before any session, carries a double-submit token matched against its own cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from core.settings import Settings

SESSION_COOKIE = "custody_console"
SIGN_IN_COOKIE = "custody_console_sign_in"
SESSION_SECONDS = 8 * 3600  # one working day; signing in again is cheap
SIGN_IN_SECONDS = 15 * 60
OIDC_FLOW_COOKIE = "custody_console_oidc"
OIDC_FLOW_SECONDS = 10 * 60  # from "Sign in with ..." to the issuer's redirect back
PATH = "/console"


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    key_id: str
    user_id: str
    csrf: str
    # Signed in with OIDC: the id_token's verified claims (never the token), whose identity is
    # re-derived on every request; None: signed in with the API key `key_id`.
    oidc_claims: dict[str, Any] | None = None


def _serializer(settings: Settings, purpose: str) -> URLSafeTimedSerializer:
    # Derived from the intent seal key (a secret production already requires, never the dev
    # one), so the console adds no secret to keep; `purpose` separates the two cookies.
    secret = hmac.new(settings.intent_seal_key_bytes, b"custody console cookies", hashlib.sha256).digest()
    return URLSafeTimedSerializer(secret, salt=f"custody-console-{purpose}")


def _redis_key(session_id: str) -> str:
    return f"custody:console:session:{session_id}"


def _set_cookie(response: Response, settings: Settings, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=settings.environment == "production",
    )


async def start(state, response: Response, key_id: str, user_id: str, oidc_claims: dict[str, Any] | None = None) -> ConsoleSession:  # type: ignore[no-untyped-def]
    session = ConsoleSession(id=secrets.token_urlsafe(32), key_id=key_id, user_id=user_id, csrf=secrets.token_urlsafe(32), oidc_claims=oidc_claims)
    record = json.dumps({"key_id": key_id, "user_id": user_id, "csrf": session.csrf, "oidc_claims": oidc_claims})
    await state.redis.set(_redis_key(session.id), record, ex=SESSION_SECONDS)
    cookie = _serializer(state.settings, "session").dumps(session.id)
    _set_cookie(response, state.settings, SESSION_COOKIE, cookie, SESSION_SECONDS)
    response.delete_cookie(SIGN_IN_COOKIE, path=PATH)
    response.delete_cookie(OIDC_FLOW_COOKIE, path=PATH)
    return session


async def current(state, request: Request) -> ConsoleSession | None:  # type: ignore[no-untyped-def]
    """The request's session, or None (no cookie, a forged or stale one, or one signed out)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or len(cookie) > 512:
        return None
    try:
        session_id = _serializer(state.settings, "session").loads(cookie, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    raw = await state.redis.get(_redis_key(session_id))
    if raw is None:
        return None
    record = json.loads(raw)
    return ConsoleSession(
        id=session_id, key_id=record["key_id"], user_id=record["user_id"], csrf=record["csrf"], oidc_claims=record.get("oidc_claims")
    )


async def end(state, session: ConsoleSession | None, response: Response) -> None:  # type: ignore[no-untyped-def]
    if session is not None:
        await state.redis.delete(_redis_key(session.id))
    response.delete_cookie(SESSION_COOKIE, path=PATH)


def sign_in_token(settings: Settings, response: Response) -> str:
    """A fresh double-submit token for the sign-in form, set as its cookie too."""
    token = secrets.token_urlsafe(32)
    _set_cookie(response, settings, SIGN_IN_COOKIE, _serializer(settings, "sign-in").dumps(token), SIGN_IN_SECONDS)
    return token


def sign_in_token_matches(settings: Settings, request: Request, submitted: str) -> bool:
    cookie = request.cookies.get(SIGN_IN_COOKIE)
    if not cookie or not submitted:
        return False
    try:
        expected = _serializer(settings, "sign-in").loads(cookie, max_age=SIGN_IN_SECONDS)
    except BadSignature:
        return False
    return hmac.compare_digest(str(expected), submitted)


def csrf_matches(session: ConsoleSession, submitted: str) -> bool:
    return bool(submitted) and hmac.compare_digest(session.csrf, submitted)


@dataclass(frozen=True)
class OidcFlow:
    """One OIDC sign-in in flight: what the callback must find again (state against CSRF, the
    nonce the id_token must carry, the PKCE verifier) and the redirect_uri the code was sent to."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str


def start_oidc_flow(settings: Settings, response: Response, redirect_uri: str) -> OidcFlow:
    flow = OidcFlow(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32), verifier=secrets.token_urlsafe(48), redirect_uri=redirect_uri)
    value = _serializer(settings, "oidc").dumps([flow.state, flow.nonce, flow.verifier, flow.redirect_uri])
    # Lax, not Strict: the issuer's redirect back is a cross-site navigation, on which a Strict
    # cookie would not be sent. It is signed, short-lived and good for one callback only.
    response.set_cookie(
        OIDC_FLOW_COOKIE,
        value,
        max_age=OIDC_FLOW_SECONDS,
        path=PATH,
        httponly=True,
        samesite="lax",
        secure=settings.environment == "production",
    )
    return flow


def oidc_flow(settings: Settings, request: Request) -> OidcFlow | None:
    """The flow the browser's cookie names (None: none, expired, or not signed by us)."""
    cookie = request.cookies.get(OIDC_FLOW_COOKIE)
    if not cookie or len(cookie) > 2048:
        return None
    try:
        state, nonce, verifier, redirect_uri = _serializer(settings, "oidc").loads(cookie, max_age=OIDC_FLOW_SECONDS)
    except (BadSignature, ValueError, TypeError):
        return None
    return OidcFlow(state=str(state), nonce=str(nonce), verifier=str(verifier), redirect_uri=str(redirect_uri))
