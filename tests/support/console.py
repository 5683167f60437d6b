"""The console in a real browser (tests/console/): a signed-in page, a withdrawal held for two
approvers, the README's screenshots. The browser and the served API are fixtures in
tests/console/conftest.py."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from core.identity import Role
from tests.conftest import create_wallet, fund, new_identity, random_address, wait_for_status, withdraw
from tests.support.policy import add_rule, change_policy

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
TIMEOUT_MS = 20_000
# Set to a folder (docs/console) to save the README's screenshots of the queue and a detail page.
SCREENSHOTS = os.environ.get("CUSTODY_CONSOLE_SCREENSHOTS")


async def screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


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
    sessions = api._transport.app.state.custody.sessions
    approvers = [await new_identity(sessions, Role.APPROVER) for _ in range(2)]
    group = f"console-{uuid.uuid4().hex[:6]}"
    await change_policy(api, lambda d: d["groups"].__setitem__(group, [user for _, user in approvers]))
    wallet = await create_wallet(api)
    await fund(api, wallet, "2")
    await add_rule(
        api,
        {
            "name": f"2 of 2 from {wallet['id']}",
            "match": {"source": {"wallets": [wallet["id"]]}, "assets": ["ETH"]},
            "action": "REQUIRE_APPROVAL",
            "quorum": {"count": 2, "group": group},
        },
        position=0,
    )
    accepted = (await withdraw(api, wallet, random_address(), "0.25")).json()
    held = await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL", *FINAL})
    assert held["status"] == "AWAITING_APPROVAL", held
    return held, approvers
