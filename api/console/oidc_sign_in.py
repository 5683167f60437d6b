"""Console sign-in with the configured OpenID Connect issuer: authorization code with PKCE.

GET /console/login/oidc sends the browser to the issuer's authorization endpoint with a random
state (against CSRF), nonce and PKCE challenge (S256), all three kept in a short-lived signed
cookie; the issuer sends it back to /console/login/oidc/callback with a code, which is exchanged
(with the verifier) for an id_token verified by api/oidc.py's own checks plus the nonce, with the
client id as audience. The identity comes from the same function bearer tokens use, the user is
provisioned as `GET /v1/users/me` does, and the session is the one the API-key form starts.

Every refusal is the sign-in page with a stable code (CSRF_FAILED, UNAUTHORIZED,
IDENTITY_PROVIDER_UNAVAILABLE) and a 401/403, never a 5xx; no token is logged or shown.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.auth import authenticated, client_ip, oidc_claims_identity, permitted
from api.console import session as sessions
from api.console.routes import console_page, render_with_cookies, router
from api.oidc import IdentityProviderUnavailable
from api.routes import users
from core.errors import CsrfFailed, CustodyError, Forbidden, NotAvailable, Unauthorized
from db import audit

CALLBACK_PATH = "/console/login/oidc/callback"
ME = "GET /v1/users/me"


def _verifier(request: Request):  # type: ignore[no-untyped-def]
    state = request.app.state.custody
    if state.oidc is None or state.settings.oidc is None or state.settings.oidc.client_id is None:
        raise NotAvailable("console sign-in with OIDC is not configured (oidc.client_id)")
    return state.oidc


def code_challenge(verifier: str) -> str:
    """RFC 7636's S256: base64url(sha256(verifier)), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def _refused(request: Request, error: CustodyError) -> Response:
    """The sign-in page again, saying why (never a 5xx: the issuer's outage is not ours)."""
    carrier = Response()
    carrier.delete_cookie(sessions.OIDC_FLOW_COOKIE, path=sessions.PATH)
    token = sessions.sign_in_token(request.app.state.custody.settings, carrier)
    status = 403 if isinstance(error, Forbidden) else 401
    return render_with_cookies(request, carrier, "sign_in.html", status_code=status, sign_in_csrf=token, error=error.message, error_code=error.code)


@router.get("/login/oidc")
@console_page
async def oidc_login(request: Request) -> Response:
    verifier = _verifier(request)
    settings = request.app.state.custody.settings
    try:
        metadata = await verifier.provider_metadata()
    except IdentityProviderUnavailable as e:
        return _refused(request, e)
    redirect_uri = settings.oidc.redirect_url or str(request.base_url).rstrip("/") + CALLBACK_PATH
    response = RedirectResponse("", status_code=302)
    flow = sessions.start_oidc_flow(settings, response, redirect_uri)
    query = {
        "response_type": "code",
        "client_id": settings.oidc.client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid",
        "state": flow.state,
        "nonce": flow.nonce,
        "code_challenge": code_challenge(flow.verifier),
        "code_challenge_method": "S256",
    }
    endpoint = metadata["authorization_endpoint"]
    response.headers["location"] = endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)
    return response


@router.get("/login/oidc/callback")
@console_page
async def oidc_callback(request: Request) -> Response:
    verifier = _verifier(request)
    state = request.app.state.custody
    settings = state.settings
    params = request.query_params
    flow = sessions.oidc_flow(settings, request)
    if flow is None:
        return _refused(request, CsrfFailed("this sign-in expired or was not started from this browser: sign in again"))
    if not params.get("state") or not hmac.compare_digest(params["state"], flow.state):
        return _refused(request, CsrfFailed("the issuer's answer is not for this sign-in (state mismatch): sign in again"))
    if "error" in params:
        reason = params["error"][:100]
        return _refused(request, Unauthorized(f"the issuer did not sign you in: {reason}"))
    code = params.get("code", "")
    if not code or len(code) > 4096:
        return _refused(request, Unauthorized("the issuer's answer has no authorization code"))
    ip = client_ip(request)

    async def proven():  # type: ignore[no-untyped-def]
        id_token = await verifier.exchange_code(code, flow.verifier, flow.redirect_uri)
        claims = await verifier.verify(id_token, audience=settings.oidc.client_id, nonce=flow.nonce)
        return claims, await oidc_claims_identity(state, claims, ip)

    try:
        claims, identity = await authenticated(state, "console sign-in", ip, True, proven)  # type: ignore[arg-type]
    except (Unauthorized, Forbidden, IdentityProviderUnavailable) as e:
        return _refused(request, e)
    # Provisioned as a bearer token's first `GET /v1/users/me` is: that route's own function.
    async with state.sessions() as db:
        await users.me(await permitted(state, identity, ME, False), state, db)
    # A page, not a redirect, carries the session cookie: SameSite=Strict cookies set in answer to
    # the issuer's cross-site redirect are sent on a navigation this page starts itself.
    response = HTMLResponse(
        '<!doctype html><meta http-equiv="refresh" content="0;url=/console"><title>Signed in</title><a href="/console">Continue to the console</a>'
    )
    stored = {k: v for k, v in claims.items() if k != "nonce"}
    await sessions.start(state, response, "", identity.id, oidc_claims=stored)
    async with state.sessions() as db, db.begin():
        await audit.append(
            db,
            actor=identity.id,
            action="console.signed_in",
            object_type="oidc_subject",
            object_id=str(claims["sub"]),
            details={"via": identity.via, "ip": ip or "unknown"},
        )
    return response
