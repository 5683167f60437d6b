"""Resetting a finished run (Temporal UI "Reset") never repeats a transfer, and `retry`
resubmits a FAILED withdrawal safely as a new linked one."""

from __future__ import annotations

import uuid

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.conftest import ALICE, create_wallet, fund, random_address, wait_for_status, withdraw


async def _reset_to_start(client, workflow_id: str):  # type: ignore[no-untyped-def]
    """What the UI's Reset to "first workflow task" does; returns the new run's handle."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    first_task = next(e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    response = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=workflow_id),
            reason="test: operator reset",
            workflow_task_finish_event_id=first_task,
            request_id=str(uuid.uuid4()),
        )
    )
    return client.get_workflow_handle(workflow_id, run_id=response.run_id)


async def test_reset_of_a_completed_withdrawal_sends_nothing_twice(api, client, settings):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    destination = random_address()
    done = await wait_for_status(api, (await withdraw(api, wallet, destination, "0.2")).json()["id"], {"COMPLETED"})

    rerun = await _reset_to_start(client, f"withdrawal-{done['id']}")
    result = await rerun.result()
    assert result["status"] == "COMPLETED"
    after = (await api.get(f"/v1/withdrawals/{done['id']}", headers=ALICE)).json()
    assert after["status"] == "COMPLETED" and after["attempts"] == done["attempts"]
    web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
    assert await web3.eth.get_balance(destination) == 2 * 10**17
    assert await web3.eth.get_transaction_count(wallet["address"]) == 1


async def test_failed_withdrawal_reset_changes_nothing_and_retry_resubmits_once(api, client, settings):
    wallet = await create_wallet(api)
    await fund(api, wallet, "0.05")
    destination = random_address()
    failed = await wait_for_status(api, (await withdraw(api, wallet, destination, "0.5")).json()["id"], {"FAILED"})
    assert failed["error_code"] == "INSUFFICIENT_FUNDS"
    await fund(api, wallet, "1")

    # A reset would now find the funds, but the stored outcome stands: nothing is signed.
    result = await (await _reset_to_start(client, f"withdrawal-{failed['id']}")).result()
    assert result["status"] == "FAILED"
    assert (await api.get(f"/v1/withdrawals/{failed['id']}", headers=ALICE)).json()["attempts"] == []

    retried = await api.post(f"/v1/withdrawals/{failed['id']}/retry", headers=ALICE)
    assert retried.status_code == 202, retried.text
    again = await api.post(f"/v1/withdrawals/{failed['id']}/retry", headers=ALICE)
    assert again.status_code == 200 and again.json()["id"] == retried.json()["id"]
    done = await wait_for_status(api, retried.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED" and done["retry_of"] == failed["id"] and done["to"] == destination
    web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
    assert await web3.eth.get_balance(destination) == 5 * 10**17

    refused = await api.post(f"/v1/withdrawals/{done['id']}/retry", headers=ALICE)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "NOT_RETRYABLE"
