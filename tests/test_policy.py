"""The policy engine against the real stack (PostgreSQL, Temporal, anvil, the API)."""

from __future__ import annotations

import pytest

from tests.conftest import create_wallet, fund, random_address, wait_for_status, withdraw

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(
        update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}, "approval_timeout_seconds": 600}
    )


async def test_splitting_a_withdrawal_under_the_approval_threshold_still_needs_a_second_person(api):
    """The bug that opened the issue: two 1 ETH withdrawals under a 1 ETH threshold both
    completed unapproved, because the threshold was checked per withdrawal only."""
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    first = (await withdraw(api, wallet, random_address(), "1")).json()
    assert (await wait_for_status(api, first["id"], FINAL))["status"] == "COMPLETED"
    second = (await withdraw(api, wallet, random_address(), "1")).json()
    held = await wait_for_status(api, second["id"], {"AWAITING_APPROVAL", *FINAL})
    assert held["status"] == "AWAITING_APPROVAL", held
    assert held["attempts"] == []
