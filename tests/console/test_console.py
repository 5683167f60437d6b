"""The operations console (/console) in a real browser: Debian's chromium driven by Playwright,
against the real API (uvicorn), worker, Temporal, PostgreSQL, Redis and anvil.

Sign in with an API key, approve a withdrawal held by a 2-of-2 rule as two approvers and watch
it complete, pause and resume from the detail page, a USER is refused the approvals queue, and a
form posted without its CSRF token is refused (403) while the same form with it gets through."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from core.identity import Role
from devnet.local import free_port
from tests.conftest import new_identity, random_address, wait_for_status
from tests.support.console import FINAL, held_for_two_approvers, key_of, screenshot, signed_in
from tests.support.policy import add_rule, change_policy

# The policy is global: every test here puts it back as it found it.
pytestmark = pytest.mark.usefixtures("policy_put_back")


async def alerts_drift_and_failing_webhooks(api, ops, served: str, held: dict) -> None:  # type: ignore[no-untyped-def]
    """The stuck page's other parts: an alert recorded on the held withdrawal (activities/alerts.py's
    own function), the anvil reconciliation report (a run through the API), and that alert's
    webhook delivery to alice's endpoint where nothing listens, failing and retried."""
    from sqlmodel import select

    from activities.alerts import record_withdrawal_alert
    from models.webhooks import WebhookDelivery
    from tests.conftest import ALICE, OPS
    from worker import ensure_webhook_dispatcher

    state = api._transport.app.state.custody
    down = f"http://127.0.0.1:{free_port()}/custody"
    hook = await api.post("/v1/webhooks", json={"url": down, "events": ["withdrawal.alert"]}, headers=ALICE)
    assert hook.status_code == 201, hook.text
    await ensure_webhook_dispatcher(state.temporal, state.settings)
    await record_withdrawal_alert(state.sessions, held["id"], "STUCK_AT_FEE_CAP", "the fee cap refuses a replacement")
    ran = await api.post("/v1/admin/reconciliation/anvil/runs", params={"wait_seconds": 55}, headers=OPS)
    assert ran.status_code == 200 and ran.json()["state"] == "COMPLETED", ran.text

    async def failed_once() -> WebhookDelivery | None:
        async with state.sessions() as session:
            rows = (await session.exec(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == hook.json()["id"]))).all()
        return next((r for r in rows if r.attempts >= 1 and r.last_error), None)

    for _ in range(300):  # the dispatcher's first attempt meets a closed port
        if (delivery := await failed_once()) is not None:
            break
        await asyncio.sleep(0.1)
    assert delivery is not None, "the alert's webhook delivery was never attempted"
    await ops.goto(f"{served}/console/stuck")
    alert = await ops.inner_text(f"#alerts tr[data-withdrawal='{held['id']}']")
    assert "STUCK_AT_FEE_CAP" in alert and "the fee cap refuses a replacement" in alert, alert
    assert "anvil" in await ops.inner_text("#drift tr[data-chain='anvil']")
    failing = await ops.inner_text(f"#failing-webhooks tr[data-delivery='{delivery.id}']")
    assert "withdrawal.alert" in failing and "alice" in failing and delivery.last_error[:20] in failing, failing


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    """The suite's settings with a key pool on an alias of the session's anvil (the wallets page)."""
    from tests.support.pools import pool_settings, with_pool

    return with_pool(base_settings, task_queue, f"pool{uuid.uuid4().hex[:8]}", pool_settings())


async def holds_and_a_rebalance(api, ops, served: str, held: dict) -> None:  # type: ignore[no-untyped-def]
    """The wallets page: the held withdrawal's reservation under its wallet; the pool's first
    rebalance (started by the button) makes its HODL and Bank keys, shown against the targets."""
    [chain] = api._transport.app.state.custody.settings.pools
    await ops.click("#nav-wallets")
    await ops.wait_for_url(re.compile(r"/console/wallets$"))
    hold = await ops.inner_text(f"#holds tr[data-wallet='{held['wallet_id']}'][data-asset='ETH']")
    assert "0.25" in hold and "alice" in hold, hold
    pool = f"#pool-{chain}"
    assert "never" in await ops.inner_text(f"{pool} .last-rebalance")
    await ops.click(f"{pool} form.rebalance button")
    await ops.wait_for_selector("#rebalance-started")
    for _ in range(200):  # the run makes keys on anvil: poll the page until it reports the run done
        if "COMPLETED" in await ops.inner_text(f"{pool} .last-rebalance"):
            break
        await asyncio.sleep(0.1)
        await ops.reload()
    assert "COMPLETED" in await ops.inner_text(f"{pool} .last-rebalance")
    assert "1 active" in await ops.inner_text(f"{pool} tr[data-tier='bank']")
    assert "1 keys at 0.1 each" in await ops.inner_text(f"{pool} tr[data-tier='bank']")


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
    await ops.goto(f"{served}/console/stuck?seconds=0&wallet={held['wallet_id']}")
    assert "AWAITING_APPROVAL" in await ops.inner_text(f"#stuck tr[data-withdrawal='{held['id']}']")
    await ops.goto(f"{served}/console/stuck?seconds=3600&wallet={held['wallet_id']}")
    assert await ops.query_selector(f"#stuck tr[data-withdrawal='{held['id']}']") is None

    # Alerts, balance drift and failing webhook deliveries, each from a real record of its own kind.
    await alerts_drift_and_failing_webhooks(api, ops, served, held)

    # What its wallet holds for it, and the pool's tiers against targets after "Rebalance now".
    await holds_and_a_rebalance(api, ops, served, held)

    # The first approver: the queue shows the amount, the rule and 0 of 2; after approving, 1 of 2.
    page = await signed_in(browser, served, key_of(first))
    await page.goto(served + "/console/approvals")
    text = await page.inner_text(row)
    assert "0.25 ETH" in text and "2 of 2 from" in text and "0 of 2" in text, text
    await page.fill(f"{row} form.approve input[name=reason]", "known counterparty")
    await page.click(f"{row} form.approve button")
    await page.wait_for_url(re.compile(r"/console/approvals$"))
    assert "1 of 2" in await page.inner_text(row) and "you approved" in await page.inner_text(row)
    await screenshot(page, "approvals")
    assert (await wait_for_status(api, held["id"], {"AWAITING_APPROVAL"}))["approvals"] == [first_id]

    # The second approver releases it; its detail page refreshes itself until COMPLETED.
    page = await signed_in(browser, served, key_of(second))
    await page.goto(served + "/console/approvals")
    await page.fill(f"{row} form.approve input[name=reason]", "second pair of eyes")
    await page.click(f"{row} form.approve button")
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
    assert (await page.goto(served + "/console/wallets")).status == 403  # type: ignore[union-attr]
    assert await page.query_selector("#nav-wallets") is None
    await page.goto(served + "/console/withdrawals")
    rebalance = await page.request.post(
        f"{served}/console/pools/anvil/rebalance", form={"csrf": await page.get_attribute("input[name=csrf]", "value") or ""}
    )
    assert rebalance.status == 403 and "FORBIDDEN" in await rebalance.text()

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


async def test_policy_versions_address_book_and_audit_log_as_the_permission_table_allows(api, served, browser):
    """An admin reads the rules (now and at the version before), the versions and the audit log
    with its verification; an operator (who may read the policy and anyone's address book, not the
    audit log) sees a new entry cooling; a USER gets neither page."""
    from tests.conftest import ALICE, OPS

    before = (await change_policy(api, lambda d: None, summary="console: the version before"))["version"]
    rule_id, version = await add_rule(api, {"name": f"console block {uuid.uuid4().hex[:6]}", "match": {"assets": ["TUSD"]}, "action": "BLOCK"})
    added = await api.post("/v1/address-book", json={"chain": "anvil", "address": random_address(), "label": "console desk"}, headers=ALICE)
    assert added.status_code == 201, added.text
    entry = added.json()

    admin = await signed_in(browser, served, "dev-admin-key")
    await admin.click("#nav-policy")
    await admin.wait_for_url(re.compile(r"/console/policy$"))
    assert "BLOCK" in await admin.inner_text(f"#rules tr[data-rule='{rule_id}']")
    assert "(current)" in await admin.inner_text("#policy-version")
    assert "console block" in await admin.inner_text(f"#versions tr[data-version='{version}']")
    assert version == before + 1
    await admin.click(f"#versions tr[data-version='{before}'] a")
    await admin.wait_for_selector(f"#versions tr.shown[data-version='{before}']")
    assert await admin.query_selector(f"#rules tr[data-rule='{rule_id}']") is None
    assert await admin.query_selector("#address-book") is None  # an ADMIN alone may not read address books (the API's table)
    await admin.click("#nav-audit")
    await admin.wait_for_url(re.compile(r"/console/audit$"))
    assert "Chain verified" in await admin.inner_text("#audit-verify")
    await admin.fill("input[name=object_id]", entry["id"])
    await admin.click("form.filters button")
    await admin.wait_for_url(re.compile(r"object_id="))
    rows = await admin.query_selector_all("#audit tbody tr")
    assert len(rows) == 1 and "address_book.added" in await rows[0].inner_text()
    filtered = await admin.goto(f"{served}/console/audit?actor=alice&action=address_book.added")
    assert filtered is not None and filtered.status == 200
    assert entry["id"] in await admin.inner_text("#audit")
    assert (await admin.goto(f"{served}/console/audit?before_id=x")).status == 422  # type: ignore[union-attr]
    assert (await admin.goto(f"{served}/console/audit?before_id={2**70}")).status == 422  # type: ignore[union-attr]

    ops = await signed_in(browser, served, key_of(OPS))
    await ops.goto(f"{served}/console/policy?owner=alice")
    cooling = await ops.inner_text(f"#address-book tr[data-entry='{entry['id']}']")
    assert "console desk" in cooling and "cooling until" in cooling and "0 of 2" in cooling, cooling
    assert (await ops.goto(f"{served}/console/audit")).status == 403  # type: ignore[union-attr]

    # An admin who is also a USER reads address books as a USER does: only their own entries.
    both, _ = await new_identity(api._transport.app.state.custody.sessions, Role.ADMIN, Role.USER)
    own_only = await signed_in(browser, served, key_of(both))
    await own_only.goto(f"{served}/console/policy?owner=alice")
    assert await own_only.query_selector("#address-book") is not None
    assert await own_only.query_selector(f"#address-book tr[data-entry='{entry['id']}']") is None

    alice = await signed_in(browser, served, "dev-alice-key")
    assert await alice.query_selector("#nav-policy") is None and await alice.query_selector("#nav-audit") is None
    assert (await alice.goto(f"{served}/console/policy")).status == 403  # type: ignore[union-attr]
    assert (await alice.goto(f"{served}/console/audit")).status == 403  # type: ignore[union-attr]


def test_every_console_page_and_action_stands_for_a_route_of_the_permission_table():
    """The console asks api/permissions.py under these API routes: a renamed route must not
    leave a console page refused for everyone (or worse, checked against nothing)."""
    from api.console import routes
    from api.permissions import PERMISSIONS

    used = {
        routes.APPROVE,
        routes.LIST,
        routes.DETAIL,
        routes.STATS,
        routes.RECONCILIATION,
        routes.POOLS,
        routes.CHANNELS,
        routes.REBALANCE,
        routes.POLICY,
        routes.POLICY_VERSIONS,
        routes.POLICY_VERSION,
        routes.ADDRESS_BOOK,
        routes.AUDIT,
        routes.AUDIT_VERIFY,
        *routes.ACTIONS.values(),
    }
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
