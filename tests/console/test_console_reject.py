"""Reject in the console, in a real browser: an approver of a 2-of-2 rule rejects a held withdrawal
from the approvals queue with a reason; it leaves the queue, and its detail page shows it
CANCELLED with REJECTED, who rejected and why. Its owner (a USER) is offered no Reject button."""

from __future__ import annotations

import re

import pytest

from tests.conftest import wait_for_status
from tests.support.console import FINAL, held_for_two_approvers, key_of, screenshot, signed_in

# The policy is global: every test here puts it back as it found it.
pytestmark = pytest.mark.usefixtures("policy_put_back")


async def test_an_approver_rejects_from_the_queue_and_the_detail_shows_rejected(api, served, browser):  # noqa: F811
    held, ((first, first_id), _) = await held_for_two_approvers(api)
    row = f"#approvals tr[data-withdrawal='{held['id']}']"

    owner = await signed_in(browser, served, "dev-alice-key")
    await owner.goto(f"{served}/console/withdrawals/{held['id']}")
    assert await owner.query_selector("#action-reject") is None and await owner.query_selector("#action-cancel") is not None

    page = await signed_in(browser, served, key_of(first))
    await page.goto(served + "/console/approvals")
    assert await page.query_selector(f"{row} form.reject button") is not None
    await screenshot(page, "approvals-reject")
    await page.fill(f"{row} form.reject input[name=reason]", "destination unknown to the desk")
    await page.click(f"{row} form.reject button")
    await page.wait_for_url(re.compile(r"/console/approvals$"))
    assert await page.query_selector(row) is None  # gone from the queue

    done = await wait_for_status(api, held["id"], FINAL)
    assert done["status"] == "CANCELLED" and done["error_code"] == "REJECTED" and done["attempts"] == [], done
    await page.goto(f"{served}/console/withdrawals/{held['id']}")
    await page.wait_for_selector("#status[data-final=true]")
    assert await page.inner_text("#status-value") == "CANCELLED"
    shown = await page.inner_text("#status")
    assert "REJECTED" in shown and first_id in shown and "destination unknown to the desk" in shown, shown
    assert await page.query_selector("#action-reject") is None

    # The dashboard counts it among the CANCELLED, in its charts too (inline SVG).
    ops = await signed_in(browser, served, "dev-ops-key")
    await ops.goto(f"{served}/console/dashboard")
    assert await ops.query_selector("svg#chart-counts g.bar[data-label='anvil CANCELLED']") is not None
    await screenshot(ops, "dashboard")


async def test_reject_without_a_reason_is_refused_and_the_detail_page_offers_reject(api, served, browser):  # noqa: F811
    held, ((first, _), _) = await held_for_two_approvers(api)
    page = await signed_in(browser, served, key_of(first))
    await page.goto(f"{served}/console/withdrawals/{held['id']}")
    assert await page.query_selector("#action-reject input[name=reason][required]") is not None
    # Past the browser's own check (the attribute removed): the server refuses an empty reason.
    await page.eval_on_selector("#action-reject input[name=reason]", "e => e.removeAttribute('required')")
    async with page.expect_navigation():
        await page.click("#action-reject button")
    assert await page.inner_text("#error-code") == "VALIDATION_ERROR"
    assert (await wait_for_status(api, held["id"], {"AWAITING_APPROVAL", *FINAL}))["status"] == "AWAITING_APPROVAL"

    # With a reason, from the detail page: it ends REJECTED.
    await page.goto(f"{served}/console/withdrawals/{held['id']}")
    await page.fill("#action-reject input[name=reason]", "limit for this desk")
    await page.click("#action-reject button")
    done = await wait_for_status(api, held["id"], FINAL)
    assert done["status"] == "CANCELLED" and done["error_code"] == "REJECTED", done
