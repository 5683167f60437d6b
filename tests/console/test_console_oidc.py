"""Console sign-in with OIDC (authorization code + PKCE) against a local issuer over real HTTP:
tests/api/test_access.py's Issuer (discovery, JWKS, signed tokens) given a real authorization
endpoint (302 back with a code and the state) and token endpoint (checks the code_verifier
against the code's S256 challenge, returns an id_token carrying the nonce).

The round trip ends in a console session whose roles come from the token (an APPROVER sees the
approvals queue, a USER does not); a state mismatch, a code redeemed with another sign-in's PKCE
verifier, a wrong nonce or audience, a denial and the issuer down each end on the sign-in page
with a stable code, never a 5xx, and no log line carries a token."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import time
import uuid
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import jwt
import pytest
import uvicorn
from sqlmodel import select
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.routing import Route

from core.settings import OidcSettings
from devnet.local import free_port
from models.access import User
from tests.api.test_access import Issuer
from tests.conftest import api_client, serve_api

CLIENT_ID = "custody-console"
APPROVER_ROLE = "custody-approver"  # mapped to APPROVER by the settings below


class AuthorizingIssuer(Issuer):
    """The test Issuer with the two endpoints a browser sign-in needs. `next_roles` are the roles
    of the next user it signs in; `nonce`, `audience` and `deny` make it misbehave on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.codes: dict[str, dict[str, str]] = {}
        self.next_roles: list[str] = ["user"]
        self.nonce: str | None = None  # set: id_tokens carry this nonce instead of the asked one
        self.audience: str | None = None  # set: id_tokens are for this audience
        self.deny = False
        self.token_status: int | None = None  # set: the token endpoint answers only this status
        self.subjects: list[str] = []

        async def discovery(_):  # type: ignore[no-untyped-def]
            return JSONResponse(
                {
                    "issuer": self.url,
                    "jwks_uri": f"{self.url}/certs",
                    "authorization_endpoint": f"{self.url}/auth",
                    "token_endpoint": f"{self.url}/token",
                }
            )

        # Routes match in order: this discovery (with the endpoints) shadows the parent's.
        self.app.router.routes.insert(0, Route("/.well-known/openid-configuration", discovery))
        self.app.router.routes.append(Route("/auth", self.authorize))
        self.app.router.routes.append(Route("/token", self.token_endpoint, methods=["POST"]))

    async def authorize(self, request: Request):  # type: ignore[no-untyped-def]
        q = request.query_params
        if (
            q.get("response_type") != "code"
            or q.get("code_challenge_method") != "S256"
            or q.get("client_id") != CLIENT_ID
            or "openid" not in q.get("scope", "")
        ):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        back = q["redirect_uri"] + "?"
        if self.deny:
            return RedirectResponse(back + f"error=access_denied&state={q['state']}", status_code=302)
        sub = f"kc-{uuid.uuid4()}"
        self.subjects.append(sub)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "nonce": q["nonce"], "redirect_uri": q["redirect_uri"], "sub": sub}
        return RedirectResponse(back + f"code={code}&state={q['state']}", status_code=302)

    async def token_endpoint(self, request: Request):  # type: ignore[no-untyped-def]
        if self.token_status is not None:
            return JSONResponse({"error": "server_error"}, status_code=self.token_status)
        form = dict(parse_qsl((await request.body()).decode()))  # urlencoded, as RFC 6749 says
        grant = self.codes.pop(str(form.get("code")), None)  # a code is good once
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if grant is None or form.get("grant_type") != "authorization_code" or form.get("client_id") != CLIENT_ID:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        if challenge != grant["challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return JSONResponse({"error": "invalid_grant", "error_description": "PKCE verification failed"}, status_code=400)
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": grant["sub"],
            "aud": self.audience or CLIENT_ID,
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce or grant["nonce"],
            "realm_access": {"roles": self.next_roles},
        }
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return JSONResponse({"access_token": "opaque-access", "token_type": "Bearer", "id_token": id_token, "expires_in": 300})


@pytest.fixture
async def oidc_issuer():  # type: ignore[no-untyped-def]
    issuer = AuthorizingIssuer()
    server = uvicorn.Server(uvicorn.Config(issuer.app, host="127.0.0.1", port=issuer.port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield issuer
    server.should_exit = True
    await task


def with_oidc(settings, issuer_url: str):  # type: ignore[no-untyped-def]
    oidc = OidcSettings(issuer=issuer_url, audience="custody", client_id=CLIENT_ID, role_map={APPROVER_ROLE: "APPROVER"}, display_name="Test IdP")
    return settings.model_copy(update={"oidc": oidc})


@pytest.fixture
async def console(settings, client, sessions, oidc_issuer):  # type: ignore[no-untyped-def]
    """The API in-process (`sessions`: its database migrated) with the console's OIDC sign-in."""
    async with api_client(with_oidc(settings, oidc_issuer.url), client) as http:
        yield http


async def to_issuer(console: httpx.AsyncClient) -> str:
    """Follows "Sign in with ..." to the issuer and back: the callback URL the issuer answers with."""
    page = await console.get("/console/sign-in")
    assert page.status_code == 200 and 'href="/console/login/oidc"' in page.text and "Sign in with Test IdP" in page.text
    start = await console.get("/console/login/oidc")
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient() as browser:  # the issuer is a real server
        answer = await browser.get(start.headers["location"])
    assert answer.status_code == 302, answer.text
    return answer.headers["location"]


async def callback(console: httpx.AsyncClient, url: str) -> httpx.Response:
    parts = urlsplit(url)
    assert parts.path == "/console/login/oidc/callback"
    return await console.get(f"{parts.path}?{parts.query}")


def refusal(page: httpx.Response) -> str:
    assert page.status_code in (401, 403), (page.status_code, page.text)
    assert "custody_console=" not in page.headers.get("set-cookie", "")
    match = re.search(r'id="sign-in-error"><code class="code">([A-Z_]+)</code>', page.text)
    assert match, page.text
    return match.group(1)


async def test_round_trip_signs_in_with_the_tokens_roles_and_logs_no_token(console, oidc_issuer, caplog):  # type: ignore[no-untyped-def]
    caplog.set_level(logging.DEBUG)
    state = console._transport.app.state.custody  # type: ignore[attr-defined]
    start = await console.get("/console/login/oidc")
    query = parse_qs(urlsplit(start.headers["location"]).query)
    assert query["code_challenge_method"] == ["S256"] and query["scope"] == ["openid"] and query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == ["http://custody.test/console/login/oidc/callback"]
    assert "custody_console_oidc=" in start.headers["set-cookie"] and "samesite=lax" in start.headers["set-cookie"].lower()

    for roles, sees_queue in ((["user", APPROVER_ROLE], True), (["user"], False)):
        console.cookies.clear()
        oidc_issuer.next_roles = roles
        signed_in = await callback(console, await to_issuer(console))
        assert signed_in.status_code == 200, signed_in.text
        assert "custody_console=" in signed_in.headers["set-cookie"] and 'url=/console"' in signed_in.text
        sub = oidc_issuer.subjects[-1]
        queue = await console.get("/console/approvals")
        assert queue.status_code == (200 if sees_queue else 403), queue.text
        home = await console.get("/console", follow_redirects=True)
        assert home.status_code == 200 and f"{sub} (" in home.text  # signed in as the token's subject
        async with state.sessions() as db:  # provisioned as a bearer token's first /v1/users/me is
            user = (await db.exec(select(User).where(User.id == sub))).one()
        assert (user.oidc_issuer, user.oidc_subject) == (oidc_issuer.url, sub)
        assert user.roles == (["APPROVER", "USER"] if sees_queue else ["USER"])
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "eyJ" not in logged and "code_verifier" not in logged


async def test_state_mismatch_and_a_replayed_callback_are_refused(console, oidc_issuer):  # type: ignore[no-untyped-def]
    url = await to_issuer(console)
    forged = re.sub(r"state=[^&]+", "state=someone-elses", url)
    assert refusal(await callback(console, forged)) == "CSRF_FAILED"
    assert (await console.get("/console/approvals")).status_code == 303  # not signed in
    # The refusal ended the flow: the genuine answer now has no sign-in to belong to.
    assert refusal(await callback(console, url)) == "CSRF_FAILED"


async def test_a_code_redeemed_with_another_sign_ins_pkce_verifier_is_refused_by_the_issuer(settings, client, console, oidc_issuer):  # type: ignore[no-untyped-def]
    """Code injection: an attacker's code pasted into the victim's callback (with the victim's
    own state) is redeemed with the victim's verifier, which is not the code's: invalid_grant."""
    attackers = await to_issuer(console)
    async with api_client(with_oidc(settings, oidc_issuer.url), client) as victim:
        victims = await to_issuer(victim)
        injected = re.sub(r"code=[^&]+", re.search(r"code=[^&]+", attackers).group(0), victims)  # type: ignore[union-attr]
        page = await callback(victim, injected)
        assert refusal(page) == "UNAUTHORIZED" and "invalid_grant" in page.text
        assert (await victim.get("/console/approvals")).status_code == 303  # not signed in


async def test_wrong_nonce_wrong_audience_and_a_denial_are_refused(console, oidc_issuer):  # type: ignore[no-untyped-def]
    oidc_issuer.nonce = "a-nonce-of-another-sign-in"
    page = await callback(console, await to_issuer(console))
    assert refusal(page) == "UNAUTHORIZED" and "nonce" in page.text
    oidc_issuer.nonce, oidc_issuer.audience = None, "custody"  # the API's audience, not the console's client
    page = await callback(console, await to_issuer(console))
    assert refusal(page) == "UNAUTHORIZED" and "another audience" in page.text
    oidc_issuer.audience, oidc_issuer.deny = None, True
    page = await callback(console, await to_issuer(console))
    assert refusal(page) == "UNAUTHORIZED" and "access_denied" in page.text
    assert (await console.get("/console/approvals")).status_code == 303


async def test_the_issuer_down_or_failing_is_a_clear_error_never_a_5xx(settings, client, console, oidc_issuer):  # type: ignore[no-untyped-def]
    oidc_issuer.token_status = 503
    page = await callback(console, await to_issuer(console))
    assert refusal(page) == "IDENTITY_PROVIDER_UNAVAILABLE"
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with api_client(with_oidc(settings, nowhere), client) as http:
        assert 'href="/console/login/oidc"' in (await http.get("/console/sign-in")).text
        page = await http.get("/console/login/oidc")
        assert refusal(page) == "IDENTITY_PROVIDER_UNAVAILABLE" and "discovery" in page.text


async def test_a_browser_signs_in_with_the_issuer_to_the_dashboard(settings, client, sessions, oidc_issuer, browser):  # type: ignore[no-untyped-def]
    oidc_issuer.next_roles = ["user", APPROVER_ROLE]
    async with serve_api(with_oidc(settings, oidc_issuer.url), client) as served:
        page = await (await browser.new_context()).new_page()
        page.set_default_timeout(20_000)
        await page.goto(served + "/console")
        assert page.url.endswith("/console/sign-in")
        await page.click("text=Sign in with Test IdP")
        await page.wait_for_selector("#signed-in-as")
        assert "/console" in page.url and "/login/oidc" not in page.url
        who = await page.inner_text("#signed-in-as")
        assert oidc_issuer.subjects[-1] in who and "APPROVER" in who
        assert await page.query_selector("#nav-approvals") is not None
        cookie = next(c for c in await page.context.cookies() if c["name"] == "custody_console")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
