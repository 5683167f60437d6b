"""Operator controls: pause/resume, four-eyes approval (and its timeout), cancel before signing,
cancel after broadcast by replacement on a real anvil with mining paused, and refusals."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlmodel import select
from temporalio import workflow
from temporalio.client import WorkflowUpdateFailedError
from web3 import AsyncHTTPProvider, AsyncWeb3

from models.db import TransferAttempt
from models.payloads import ControlEvent, OperatorRequest, WithdrawalState
from tests.conftest import (
    ALICE,
    api_client,
    create_wallet,
    fund,
    mining_paused,
    random_address,
    replay_and_record,
    until,
    wait_for_status,
    withdraw,
)
from worker import build_worker

OPS = {"Authorization": "Bearer dev-ops-key"}
BOB = {"Authorization": "Bearer dev-bob-key"}


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}, "approval_timeout_seconds": 600})


async def _status_of(api, withdrawal_id: str, headers=ALICE) -> dict:  # type: ignore[no-untyped-def]
    return (await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=headers)).json()


async def test_large_withdrawal_waits_for_a_second_person_and_pause_holds_it(api, client):
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    destination = random_address()
    accepted = (await withdraw(api, wallet, destination, "1.5")).json()
    held = await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
    assert held["attempts"] == []

    # The requester cannot approve, over HTTP (not an operator) nor straight to Temporal.
    assert (await api.post(f"/v1/withdrawals/{accepted['id']}/approve", json={}, headers=ALICE)).status_code == 403
    handle = client.get_workflow_handle(f"withdrawal-{accepted['id']}")
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("approve", OperatorRequest(by="alice"))
    assert refused.value.cause.type == "SELF_APPROVAL"

    paused = await api.post(f"/v1/withdrawals/{accepted['id']}/pause", json={"reason": "checking with desk"}, headers=OPS)
    assert paused.status_code == 200
    approved = await api.post(f"/v1/withdrawals/{accepted['id']}/approve", json={"reason": "ok"}, headers=OPS)
    assert approved.status_code == 200, approved.text
    await asyncio.sleep(1.5)
    body = await _status_of(api, accepted["id"])
    assert body["paused"] is True and body["paused_by"] == "ops" and body["paused_reason"] == "checking with desk"
    assert body["approved_by"] == "ops" and body["attempts"] == [] and body["status"] == "AWAITING_APPROVAL"

    assert (await api.post(f"/v1/withdrawals/{accepted['id']}/resume", json={}, headers=OPS)).status_code == 200
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["status"] == "COMPLETED" and done["paused"] is False
    events = [e["status"] for e in done["history"]]
    assert events.index("APPROVED") < events.index("SIGNING") and "PAUSED" in events and "RESUMED" in events
    web3 = AsyncWeb3(AsyncHTTPProvider(api_settings_rpc(api)))
    assert await web3.eth.get_balance(destination) == 15 * 10**17


def api_settings_rpc(api) -> str:  # type: ignore[no-untyped-def]
    return api._transport.app.state.custody.settings.chains["anvil"].rpc_url


async def test_unapproved_withdrawal_fails_after_the_timeout_and_sends_nothing(settings, client, sessions):
    quick = settings.model_copy(update={"approval_timeout_seconds": 3})
    async with build_worker(client, quick, sessions), api_client(quick, client) as api:
        wallet = await create_wallet(api)
        await fund(api, wallet, "3")
        accepted = (await withdraw(api, wallet, random_address(), "2")).json()
        await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
        done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=30)
    assert done["status"] == "FAILED" and done["error_code"] == "APPROVAL_TIMEOUT"
    assert done["attempts"] == [] and done["tx_hash"] is None


async def test_cancel_before_signing_releases_everything(api):
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    accepted = (await withdraw(api, wallet, random_address(), "2")).json()
    await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
    cancelled = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={"reason": "customer asked"}, headers=ALICE)
    assert cancelled.status_code == 200, cancelled.text
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["status"] == "CANCELLED" and done["cancel_requested_by"] == "alice"
    assert done["attempts"] == [] and "customer asked" in done["error_message"]
    again = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={}, headers=ALICE)
    assert again.status_code == 409 and again.json()["error"]["code"] == "CANCEL_TOO_LATE"
    # Nothing stays held: the whole balance is spendable again.
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"] == "0"


async def test_operator_actions_on_others_need_the_operator_role(api):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
    assert (await api.post(f"/v1/withdrawals/{accepted['id']}/pause", json={}, headers=BOB)).status_code == 404
    done = await wait_for_status(api, accepted["id"], {"COMPLETED"})
    late = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={}, headers=OPS)
    assert late.status_code == 409 and late.json()["error"]["code"] == "CANCEL_TOO_LATE"
    assert done["status"] == "COMPLETED"


async def test_cancel_after_broadcast_replaces_the_transfer_in_the_same_nonce(base_settings, task_queue, client, sessions, paused_anvil):
    async with mining_paused(base_settings, task_queue, client, sessions, paused_anvil, bump_after=120) as (api, web3, wallet):
        destination = random_address()
        accepted = (await withdraw(api, wallet, destination, "0.5", key=uuid.uuid4().hex)).json()
        await wait_for_status(api, accepted["id"], {"CONFIRMING"})
        assert len(await web3.provider.make_request("txpool_content", [])) > 0

        cancel = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={"reason": "wrong address"}, headers=ALICE)
        assert cancel.status_code == 200, cancel.text
        for _ in range(100):
            body = await _status_of(api, accepted["id"])
            if len(body["attempts"]) == 2 and body["attempts"][1]["broadcast_at"]:
                break
            await asyncio.sleep(0.1)
        assert [a["purpose"] for a in body["attempts"]] == ["TRANSFER", "CANCEL"]
        assert body["attempts"][0]["nonce"] == body["attempts"][1]["nonce"] == 0

        await web3.provider.make_request("evm_mine", [])
        done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
        assert done["status"] == "CANCELLED", done
        assert done["tx_hash"] == body["attempts"][1]["tx_hash"]
        assert await web3.eth.get_balance(destination) == 0
        assert await web3.eth.get_transaction_count(wallet["address"]) == 1
        receipt = await web3.eth.get_transaction_receipt(done["tx_hash"])
        assert receipt["to"] == receipt["from"] == wallet["address"]
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v3_cancelled_after_broadcast")
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v6_cancelled_after_broadcast")
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v9_cancelled_after_broadcast")


async def test_stuck_transfer_is_replaced_in_the_same_nonce_with_higher_fees(base_settings, task_queue, client, sessions, paused_anvil):
    async with mining_paused(base_settings, task_queue, client, sessions, paused_anvil, bump_after=1) as (api, web3, wallet):
        destination = random_address()
        accepted = (await withdraw(api, wallet, destination, "0.25")).json()
        for _ in range(150):
            body = await _status_of(api, accepted["id"])
            if len(body["attempts"]) >= 2 and all(a["broadcast_at"] for a in body["attempts"]):
                break
            await asyncio.sleep(0.1)
        first, second = body["attempts"][0], body["attempts"][1]
        assert first["nonce"] == second["nonce"] == 0 and first["tx_hash"] != second["tx_hash"]
        async with sessions() as session:
            fees = {
                a.tx_hash: a.fee_params
                for a in (await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == accepted["id"]))).all()
            }
        for key in ("maxFeePerGas", "maxPriorityFeePerGas"):
            assert fees[second["tx_hash"]][key] >= fees[first["tx_hash"]][key] * 115 // 100
        assert (await web3.eth.get_transaction(second["tx_hash"]))["nonce"] == 0

        await web3.provider.make_request("evm_mine", [])
        done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
        assert done["status"] == "COMPLETED", done
        assert done["tx_hash"] in [a["tx_hash"] for a in done["attempts"][1:]]
        assert await web3.eth.get_balance(destination) == 25 * 10**16
        assert await web3.eth.get_transaction_count(wallet["address"]) == 1


def _worker_with_a_slow_pause_record(client, settings, sessions, delay: float):  # type: ignore[no-untyped-def]
    """The real worker, except that recording a PAUSED takes `delay` seconds longer (a slow or
    restarted worker): the real activity still does the recording."""
    from temporalio import activity
    from temporalio.worker import Worker

    from activities.errors import CustodyWorkerInterceptor
    from worker import WORKFLOWS, build_activities

    activities = build_activities(settings, sessions)
    real = next(a for a in activities if getattr(a, "__name__", "") == "record_control")

    @activity.defn(name="record_operator_action")
    async def slow_pause_record(event: ControlEvent) -> None:
        if event.event == "PAUSED":
            await asyncio.sleep(delay)
        await real(event)

    activities = [slow_pause_record if a is real else a for a in activities]
    return Worker(
        client, task_queue=settings.task_queue, workflows=list(WORKFLOWS), activities=activities, interceptors=[CustodyWorkerInterceptor(None)]
    )


async def _until_recorded(api, withdrawal_id: str, *events: str) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(200):
        body = await _status_of(api, withdrawal_id)
        if all(e in [h["status"] for h in body["history"]] for e in events):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{events} not recorded: {body['history']}")


async def test_pause_then_resume_at_once_is_recorded_in_that_order_and_shown_unpaused(settings, client, sessions):
    """Found by `custody chaos`: PAUSED and RESUMED were recorded by two activities side by side;
    when the PAUSED one ran last, the running withdrawal stayed shown paused (`paused: true`)."""
    async with _worker_with_a_slow_pause_record(client, settings, sessions, delay=2), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await fund(api, wallet, "3")
        accepted = (await withdraw(api, wallet, random_address(), "1.5")).json()
        await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
        handle = client.get_workflow_handle(f"withdrawal-{accepted['id']}")
        await handle.signal("pause", OperatorRequest(by="ops", reason="look"))
        await handle.signal("resume", OperatorRequest(by="ops", reason="fine"))
        body = await _until_recorded(api, accepted["id"], "PAUSED", "RESUMED")
        await asyncio.sleep(2.5)  # past the slow PAUSED record, whichever order they ran in
        body = await _status_of(api, accepted["id"])
        assert body["paused"] is False, body
        assert (await handle.query("state", result_type=WithdrawalState)).paused is False
        events = [h["status"] for h in body["history"]]
        assert events.index("PAUSED") < events.index("RESUMED")
        approved = await api.post(f"/v1/withdrawals/{accepted['id']}/approve", json={}, headers=OPS)
        assert approved.status_code == 200, approved.text
        done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
        assert done["status"] == "COMPLETED" and done["paused"] is False
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v4_paused_and_resumed_in_order")


async def test_a_withdrawal_paused_while_confirming_ends_unpaused(base_settings, task_queue, client, sessions, paused_anvil):
    """Found by `custody chaos`: a pause that reached a withdrawal already out on chain (only
    the chain ends it) left it COMPLETED and shown paused for good, its PAUSED record landing
    even after the final one. A final withdrawal is never paused."""
    from core.settings import EvmChainSettings

    chain = EvmChainSettings(
        chain_id=31337, rpc_url=paused_anvil.info["rpc_url"], poll_interval_seconds=0.2, fee_bump_after_seconds=120, finality="depth", confirmations=1
    )
    settings = base_settings.model_copy(update={"task_queue": task_queue, "chains": {"anvil": chain}})
    web3 = AsyncWeb3(AsyncHTTPProvider(chain.rpc_url))
    async with _worker_with_a_slow_pause_record(client, settings, sessions, delay=3), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await web3.provider.make_request("anvil_setBalance", [wallet["address"], hex(10**18)])
        await web3.provider.make_request("evm_setAutomine", [False])
        accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
        await wait_for_status(api, accepted["id"], {"CONFIRMING"})
        await client.get_workflow_handle(f"withdrawal-{accepted['id']}").signal("pause", OperatorRequest(by="ops"))
        await web3.provider.make_request("evm_mine", [])
        done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
        assert done["status"] == "COMPLETED"
        body = await _until_recorded(api, accepted["id"], "PAUSED", "COMPLETED")
        assert body["paused"] is False and body["status"] == "COMPLETED", body
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v4_paused_while_confirming")


async def test_operator_actions_while_temporal_is_unreachable_answer_503_to_try_again(api, settings, tmp_path):
    """Found by `custody chaos`: a cancel sent while the Temporal server restarted was refused
    409 WORKFLOW_NOT_RUNNING ("tcp connect error"), and then took effect. Temporal out of reach
    says nothing about the workflow: 503 TEMPORAL_UNAVAILABLE, try again."""
    from core.temporal import connect_temporal
    from devnet import local

    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    accepted = (await withdraw(api, wallet, random_address(), "1.5")).json()
    await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
    port = local.free_port()
    server = local.spawn(
        "temporal-gone",
        [local.temporal_path(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--headless", "--log-level", "error"],
        tmp_path,
        lambda: local.port_open(port),
    )
    try:
        gone = await connect_temporal(settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"}))
    finally:
        server.stop()
    async with api_client(settings, gone) as offline:
        for action in ("pause", "cancel"):
            answer = await offline.post(f"/v1/withdrawals/{accepted['id']}/{action}", json={}, headers=OPS)
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE", answer.text
        # A new withdrawal: stored, its workflow not started: 503, and the same request again starts it.
        key, to = uuid.uuid4().hex, random_address()
        new = await withdraw(offline, wallet, to, "0.1", key=key)
        assert new.status_code == 503 and new.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE", new.text
    again = await withdraw(api, wallet, to, "0.1", key=key)
    assert again.status_code == 200, again.text
    assert (await wait_for_status(api, again.json()["id"], {"COMPLETED", "FAILED", "CANCELLED"}))["status"] == "COMPLETED"
    cancelled = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={}, headers=ALICE)
    assert cancelled.status_code == 200, cancelled.text
    assert (await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"}))["status"] == "CANCELLED"


@workflow.defn(name="WithdrawalWorkflow")
class _WithdrawalWorkflowWithABug:
    """Stands for a workflow task that fails (a bug, or a worker that died in the middle of it):
    the server retries the task and meanwhile refuses updates ("Workflow Task in failed state")."""

    @workflow.run
    async def run(self, request: dict) -> None:  # type: ignore[type-arg]
        raise RuntimeError("a workflow task that fails")


async def test_an_operator_action_while_the_workflow_task_fails_answers_503_to_try_again(api, base_settings, client):
    """Found by `custody chaos`: a cancel sent while the withdrawal's workflow task was being
    retried (a worker had died in it) was answered 409 WORKFLOW_NOT_RUNNING, and an earlier try
    of the same cancel then took effect. The workflow runs: 503 TEMPORAL_UNAVAILABLE, try again."""
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    failing = base_settings.model_copy(update={"task_queue": f"tq-failing-{uuid.uuid4().hex[:8]}"})
    # Unsandboxed: the stand-in lives in this test module, whose imports the sandbox refuses.
    stand_in = Worker(client, task_queue=failing.task_queue, workflows=[_WithdrawalWorkflowWithABug], workflow_runner=UnsandboxedWorkflowRunner())
    async with stand_in, api_client(failing, client) as on_failing:
        accepted = (await withdraw(on_failing, wallet, random_address(), "0.1")).json()
        handle = client.get_workflow_handle(f"withdrawal-{accepted['id']}")

        async def task_failed() -> bool:
            return any(e.HasField("workflow_task_failed_event_attributes") for e in (await handle.fetch_history()).events)

        await until(task_failed, timeout=10, what="the first workflow task to fail")
        answer = await on_failing.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={}, headers=OPS)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE", answer.text
        await handle.terminate("test over")
