"""Console sign-in with the configured OpenID Connect issuer: authorization code with PKCE.

GET /console/login/oidc sends the browser to the issuer's authorization endpoint with a random
state (against CSRF), nonce and PKCE challenge (S256), all three kept in a short-lived signed
cookie; the issuer sends it back to /console/login/oidc/callback with a code, which is exchanged
(with the verifier) for an id_token verified by api/oidc.py's own checks plus the nonce, with the
client id as audience. The identity comes from the same function bearer tokens use, and the user
is provisioned as a bearer token's first `GET /v1/users/me` is (that route's own function).

The pages themselves are in api/console/routes.py; a refusal raised here (CSRF_FAILED,
UNAUTHORIZED, IDENTITY_PROVIDER_UNAVAILABLE) is shown there on the sign-in page, never as a 5xx.
Nothing here logs or shows a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from api.auth import authenticated, client_ip, oidc_claims_identity, permitted
from api.console import session as sessions
from api.routes import users
from core.errors import CsrfFailed, NotAvailable, Unauthorized
from core.identity import Identity

CALLBACK_PATH = "/console/login/oidc/callback"
ME = "GET /v1/users/me"


def _verifier(state):  # type: ignore[no-untyped-def]
    if state.oidc is None or state.settings.oidc is None or state.settings.oidc.client_id is None:
        raise NotAvailable("console sign-in with OIDC is not configured (oidc.client_id)")
    return state.oidc


def code_challenge(verifier: str) -> str:
    """RFC 7636's S256: base64url(sha256(verifier)), unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


async def authorization_url(request: Request, response: Response) -> str:
    """Where to send the browser to sign in; the flow's cookie is set on `response`."""
    state = request.app.state.custody
    metadata = await _verifier(state).provider_metadata()
    settings = state.settings
    redirect_uri = settings.oidc.redirect_url or str(request.base_url).rstrip("/") + CALLBACK_PATH
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
    endpoint = str(metadata["authorization_endpoint"])
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)


async def signed_in(request: Request) -> tuple[dict[str, Any], Identity]:
    """The issuer's answer to this browser's sign-in: its verified claims and their identity,
    the user provisioned. Refusals are CustodyErrors with their stable codes."""
    state = request.app.state.custody
    verifier = _verifier(state)
    settings = state.settings
    params = request.query_params
    flow = sessions.oidc_flow(settings, request)
    if flow is None:
        raise CsrfFailed("this sign-in expired or was not started from this browser: sign in again")
    if not hmac.compare_digest(params.get("state", ""), flow.state):
        raise CsrfFailed("the issuer's answer is not for this sign-in (state mismatch): sign in again")
    if "error" in params:
        raise Unauthorized(f"the issuer did not sign you in: {params['error'][:100]}")
    code = params.get("code", "")
    if not code or len(code) > 4096:
        raise Unauthorized("the issuer's answer has no authorization code")
    ip = client_ip(request)
    claims: dict[str, Any] = {}

    async def proven() -> Identity:
        id_token = await verifier.exchange_code(code, flow.verifier, flow.redirect_uri)
        claims.update(await verifier.verify(id_token, audience=settings.oidc.client_id, nonce=flow.nonce))
        return await oidc_claims_identity(state, claims, ip)

    identity = await authenticated(state, "console sign-in", ip, True, proven)
    async with state.sessions() as db:
        await users.me(await permitted(state, identity, ME, False), state, db)
    return {k: v for k, v in claims.items() if k != "nonce"}, identity
