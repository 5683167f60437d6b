"""Reject: an approver turns down a withdrawal awaiting approval, with a reason. It ends CANCELLED
with error_code REJECTED, its hold released, nothing signed; the requester and a USER cannot
reject, and a withdrawal no longer awaiting approval answers 409 NOT_AWAITING_APPROVAL."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowUpdateFailedError

from models.payloads import OperatorRequest
from tests.conftest import ALICE, BOB, create_wallet, fund, random_address, replay_and_record, wait_for_status, withdraw

OPS = {"Authorization": "Bearer dev-ops-key"}


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}, "approval_timeout_seconds": 600})


async def _reserved_eth(api, wallet: dict) -> str:  # type: ignore[no-untyped-def]
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    return next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"]


async def test_an_approver_rejects_with_a_reason_and_the_hold_is_released(api, client):
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    accepted = (await withdraw(api, wallet, random_address(), "1.5")).json()
    await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
    assert await _reserved_eth(api, wallet) != "0"
    url = f"/v1/withdrawals/{accepted['id']}/reject"

    # The requester cannot reject (over HTTP nor straight to Temporal), nor can a USER; a reason is required.
    assert (await api.post(url, json={"reason": "no"}, headers=ALICE)).status_code == 403
    assert (await api.post(url, json={"reason": "no"}, headers=BOB)).status_code in (403, 404)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await client.get_workflow_handle(f"withdrawal-{accepted['id']}").execute_update("reject", OperatorRequest(by="alice", reason="mine"))
    assert refused.value.cause.type == "SELF_APPROVAL"
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        missing = await api.post(url, json=body, headers=OPS)
        assert missing.status_code == 422, (body, missing.text)
    assert (await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"}))["status"] == "AWAITING_APPROVAL"

    rejected = await api.post(url, json={"reason": "destination not verified"}, headers=OPS)
    assert rejected.status_code == 200, rejected.text
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["status"] == "CANCELLED" and done["error_code"] == "REJECTED", done
    assert "ops" in done["error_message"] and "destination not verified" in done["error_message"]
    assert done["attempts"] == []
    assert await _reserved_eth(api, wallet) == "0"

    again = await api.post(url, json={"reason": "twice"}, headers=OPS)
    assert again.status_code == 409 and again.json()["error"]["code"] == "NOT_AWAITING_APPROVAL"
    audit = (await api.get("/v1/audit", params={"object_id": accepted["id"]}, headers={"Authorization": "Bearer dev-admin-key"})).json()
    assert any(e["action"] == "withdrawal.rejected" and e["actor"] == "ops" for e in audit["entries"]), audit
    await replay_and_record(client, f"withdrawal-{accepted['id']}", "WithdrawalWorkflow__v5_rejected_awaiting_approval")


async def test_reject_refused_when_not_awaiting_approval(api):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
    await wait_for_status(api, accepted["id"], {"COMPLETED"})
    refused = await api.post(f"/v1/withdrawals/{accepted['id']}/reject", json={"reason": "late"}, headers=OPS)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "NOT_AWAITING_APPROVAL"
