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

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from core.settings import Settings

SESSION_COOKIE = "custody_console"
SIGN_IN_COOKIE = "custody_console_sign_in"
SESSION_SECONDS = 8 * 3600  # one working day; signing in again is cheap
SIGN_IN_SECONDS = 15 * 60
PATH = "/console"


@dataclass(frozen=True)
class ConsoleSession:
    id: str
    key_id: str
    user_id: str
    csrf: str


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


async def start(state, response: Response, key_id: str, user_id: str) -> ConsoleSession:  # type: ignore[no-untyped-def]
    session = ConsoleSession(id=secrets.token_urlsafe(32), key_id=key_id, user_id=user_id, csrf=secrets.token_urlsafe(32))
    record = json.dumps({"key_id": key_id, "user_id": user_id, "csrf": session.csrf})
    await state.redis.set(_redis_key(session.id), record, ex=SESSION_SECONDS)
    cookie = _serializer(state.settings, "session").dumps(session.id)
    _set_cookie(response, state.settings, SESSION_COOKIE, cookie, SESSION_SECONDS)
    response.delete_cookie(SIGN_IN_COOKIE, path=PATH)
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
    return ConsoleSession(id=session_id, key_id=record["key_id"], user_id=record["user_id"], csrf=record["csrf"])


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
