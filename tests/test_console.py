"""The operations console (/console) in a real browser: Debian's chromium driven by Playwright,
against the real API (uvicorn), worker, Temporal, PostgreSQL, Redis and anvil.

Sign in with an API key, approve a withdrawal held by a 2-of-2 rule as two approvers and watch
it complete, pause and resume from the detail page, a USER is refused the approvals queue, and a
form posted without its CSRF token is refused (403) while the same form with it gets through."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from pathlib import Path

import pytest
import uvicorn

from api.main import create_app
from core.identity import Role
from devnet.local import free_port
from tests.conftest import create_wallet, fund, random_address, wait_for_status, withdraw
from tests.test_access import new_identity
from tests.test_docs_offline import BROWSER_ARGS, CHROMIUM
from tests.test_policy import add_rule, change_policy, policy_put_back  # noqa: F401  (autouse: the policy is put back)

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
TIMEOUT_MS = 20_000
# Set to a folder (docs/console) to save the README's screenshots of the queue and a detail page.
SCREENSHOTS = os.environ.get("CUSTODY_CONSOLE_SCREENSHOTS")


async def screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture
async def served(settings, client, api):  # type: ignore[no-untyped-def]
    """The API under uvicorn for the browser (`api`, in-process, sets things up; its worker runs them)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, temporal=client), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
async def browser():  # type: ignore[no-untyped-def]
    from playwright.async_api import async_playwright

    assert shutil.which("chromium") or CHROMIUM, "chromium is missing: ./dev test installs it (apt-get install chromium)"
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def signed_in(browser, served: str, api_key: str):  # type: ignore[no-untyped-def]
    """A fresh browser context (its own cookies) signed in with `api_key`; its page."""
    context = await browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await page.goto(served + "/console")
    assert page.url.endswith("/console/sign-in")
    await page.fill("input[name=api_key]", api_key)
    await page.click("#sign-in button")
    await page.wait_for_selector("#signed-in-as")
    return page


def key_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def held_for_two_approvers(api) -> tuple[dict, list[tuple[dict, str]]]:  # type: ignore[no-untyped-def]
    """A withdrawal of alice's held by a 2-of-2 rule (a group of two fresh approvers)."""
    from tests.test_policy import ADMIN  # noqa: F401  (add_rule and change_policy use it)

    sessions = api._transport.app.state.custody.sessions
    approvers = [await new_identity(sessions, Role.APPROVER) for _ in range(2)]
    group = f"console-{uuid.uuid4().hex[:6]}"
    await change_policy(api, lambda d: d["groups"].__setitem__(group, [user for _, user in approvers]))
    wallet = await create_wallet(api)
    await fund(api, wallet, "2")
    await add_rule(api, {
        "name": f"2 of 2 from {wallet['id']}", "match": {"source": {"wallets": [wallet["id"]]}, "assets": ["ETH"]},
        "action": "REQUIRE_APPROVAL", "quorum": {"count": 2, "group": group},
    }, position=0)
    accepted = (await withdraw(api, wallet, random_address(), "0.25")).json()
    held = await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL", *FINAL})
    assert held["status"] == "AWAITING_APPROVAL", held
    return held, approvers


async def test_two_approvers_release_a_held_withdrawal_and_an_operator_pauses_and_resumes_it(api, served, browser):
    held, ((first, first_id), (second, second_id)) = await held_for_two_approvers(api)
    row = f"#approvals tr[data-withdrawal='{held['id']}']"

    # An operator pauses and resumes it from its detail page (the buttons the role allows).
    ops = await signed_in(browser, served, "dev-ops-key")
    # An operator starts on the dashboard: GET /v1/admin/stats's numbers, as tables.
    assert ops.url.endswith("/console/dashboard")
    assert "AWAITING_APPROVAL" in await ops.inner_text("#by-status") and "anvil" in await ops.inner_text("#by-day")
    await ops.goto(f"{served}/console/withdrawals/{held['id']}")
    assert await ops.inner_text("#amount") == "0.25 ETH (250000000000000000 base units)"
    assert "2 of 2 from" in await ops.inner_text("#policy")
    await ops.fill("#action-pause input[name=reason]", "checking the destination")
    await ops.click("#action-pause button")
    await ops.wait_for_selector("#paused")
    assert "paused by ops: checking the destination" in await ops.inner_text("#paused")
    assert (await wait_for_status(api, held["id"], {"AWAITING_APPROVAL"}))["paused"] is True
    await ops.click("#action-resume button")
    await ops.wait_for_selector("#action-pause")
    assert await ops.query_selector("#paused") is None
    assert (await wait_for_status(api, held["id"], {"AWAITING_APPROVAL"}))["paused"] is False

    # The withdrawals list finds it by every filter, and not under another status.
    listed = f"#withdrawals tr[data-withdrawal='{held['id']}']"
    await ops.goto(f"{served}/console/withdrawals?status=AWAITING_APPROVAL&chain=anvil&asset=eth&owner=alice&wallet={held['wallet_id']}")
    assert "0.25 ETH" in await ops.inner_text(listed)
    await ops.goto(f"{served}/console/withdrawals?status=COMPLETED&wallet={held['wallet_id']}")
    assert await ops.query_selector(listed) is None
    unknown = await ops.goto(f"{served}/console/withdrawals?status=NOPE")
    assert unknown is not None and unknown.status == 422 and await ops.inner_text("#error-code") == "VALIDATION_ERROR"

    # Held in one step: on the stuck page once the threshold is below its time there, not before.
    await ops.goto(f"{served}/console/stuck?seconds=0")
    assert "AWAITING_APPROVAL" in await ops.inner_text(f"#stuck tr[data-withdrawal='{held['id']}']")
    await ops.goto(f"{served}/console/stuck?seconds=3600")
    assert await ops.query_selector(f"#stuck tr[data-withdrawal='{held['id']}']") is None

    # The first approver: the queue shows the amount, the rule and 0 of 2; after approving, 1 of 2.
    page = await signed_in(browser, served, key_of(first))
    await page.goto(served + "/console/approvals")
    text = await page.inner_text(row)
    assert "0.25 ETH" in text and "2 of 2 from" in text and "0 of 2" in text, text
    await page.fill(f"{row} input[name=reason]", "known counterparty")
    await page.click(f"{row} button")
    await page.wait_for_url(re.compile(r"/console/approvals$"))
    assert "1 of 2" in await page.inner_text(row) and "you approved" in await page.inner_text(row)
    await screenshot(page, "approvals")
    assert (await wait_for_status(api, held["id"], {"AWAITING_APPROVAL"}))["approvals"] == [first_id]

    # The second approver releases it; its detail page refreshes itself until COMPLETED.
    page = await signed_in(browser, served, key_of(second))
    await page.goto(served + "/console/approvals")
    await page.fill(f"{row} input[name=reason]", "second pair of eyes")
    await page.click(f"{row} button")
    await page.wait_for_url(re.compile(r"/console/approvals$"))
    await page.goto(f"{served}/console/withdrawals/{held['id']}")
    await page.wait_for_selector("#status[data-final=true]", timeout=60_000)
    assert await page.inner_text("#status-value") == "COMPLETED"
    done = await wait_for_status(api, held["id"], FINAL)
    assert done["status"] == "COMPLETED" and done["approvals"] == [first_id, second_id]
    # The reload on turning final brought the rest of the page up to date too.
    assert "COMPLETED" in await page.inner_text("#history")
    fee = int(done["fee_paid_base_units"])
    assert await page.inner_text("#fee") == f"{fee // 10**18}.{fee % 10**18:018d}".rstrip("0").rstrip(".") + " ETH"
    await screenshot(page, "withdrawal")
    assert done["tx_hash"] in await page.inner_text("#attempts") and done["tx_hash"] in await page.inner_text("#tx-hash")


async def test_a_user_is_refused_the_queue_and_a_form_without_its_csrf_token_is_refused(served, browser):
    page = await signed_in(browser, served, "dev-alice-key")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "custody_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await page.query_selector("#nav-approvals") is None
    refused = await page.goto(served + "/console/approvals")
    assert refused is not None and refused.status == 403
    assert await page.inner_text("#error-code") == "FORBIDDEN"
    assert (await page.goto(served + "/console/stuck")).status == 403  # type: ignore[union-attr]

    # The session cookie rides along, but without the form's token the action is refused...
    url = f"{served}/console/withdrawals/{uuid.uuid4()}/pause"
    without = await page.request.post(url, form={"reason": "x"})
    assert without.status == 403 and "CSRF_FAILED" in await without.text()
    wrong = await page.request.post(url, form={"reason": "x", "csrf": "not-the-token"})
    assert wrong.status == 403 and "CSRF_FAILED" in await wrong.text()
    # ...and with it the same request passes the check (the withdrawal does not exist: 404).
    await page.goto(served + "/console/withdrawals")
    token = await page.get_attribute("input[name=csrf]", "value")
    with_token = await page.request.post(url, form={"reason": "x", "csrf": token or ""})
    assert with_token.status == 404 and "WITHDRAWAL_NOT_FOUND" in await with_token.text()

    # Signing out ends the session on the server: the old cookie opens nothing any more.
    await page.click("header form button")
    await page.wait_for_url(re.compile(r"/console/sign-in$"))
    stale = await page.request.get(served + "/console/withdrawals", headers={"Cookie": f"custody_console={cookie['value']}"}, max_redirects=0)
    assert stale.status == 303 and stale.headers["location"] == "/console/sign-in"


async def test_a_wrong_key_is_refused_at_sign_in(served, browser):
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(served + "/console/sign-in")
    await page.fill("input[name=api_key]", "ck_0000000000_not-a-key")
    await page.click("#sign-in button")
    await page.wait_for_selector("#sign-in-error")
    assert "unknown API key" in await page.inner_text("#sign-in-error")
    assert not [c for c in await context.cookies() if c["name"] == "custody_console"]


def test_every_console_page_and_action_stands_for_a_route_of_the_permission_table():
    """The console asks api/permissions.py under these API routes: a renamed route must not
    leave a console page refused for everyone (or worse, checked against nothing)."""
    from api.console import routes
    from api.permissions import PERMISSIONS

    used = {routes.APPROVE, routes.LIST, routes.DETAIL, routes.STATS, *routes.ACTIONS.values()}
    assert used <= set(PERMISSIONS), used - set(PERMISSIONS)


async def test_a_session_ends_when_its_api_key_is_revoked_or_its_user_loses_the_role(api):
    """A console session holds its key's id and is re-checked on every request: revoking the
    key, or taking the role away, counts on the next page (no browser needed: plain HTTP)."""
    from db.access import find_api_key, revoke_api_key, upsert_user

    sessions = api._transport.app.state.custody.sessions
    headers, user_id = await new_identity(sessions, Role.APPROVER)

    async def sign_in() -> None:
        form = await api.get("/console/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token is not None
        signed = await api.post("/console/sign-in", data={"api_key": key_of(headers), "csrf": token.group(1)})
        assert signed.status_code == 303, signed.text

    await sign_in()
    assert (await api.get("/console/approvals")).status_code == 200
    async with sessions() as session, session.begin():
        await upsert_user(session, user_id, [Role.USER.value])
    assert (await api.get("/console/approvals")).status_code == 403  # the role is gone at once
    async with sessions() as session, session.begin():
        await upsert_user(session, user_id, [Role.APPROVER.value])
    assert (await api.get("/console/approvals")).status_code == 200
    async with sessions() as session, session.begin():
        found = await find_api_key(session, key_of(headers))
        assert found is not None
        await revoke_api_key(session, found[0].id, by="test")
    gone = await api.get("/console/approvals")
    assert gone.status_code == 303 and gone.headers["location"] == "/console/sign-in"
    api.cookies.clear()
