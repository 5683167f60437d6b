"""Determinism guards: the worker validates workflows in the sandbox, fresh histories replay,
and histories saved from earlier versions still replay against the current code (so changing a
workflow without `workflow.patched` fails CI).

Record new histories after an intended, patched change:
    CUSTODY_RECORD_HISTORIES=1 ./dev test tests/workflows/test_replay.py   (writes only names not saved yet;
    payloads are encrypted with the development payload key)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.pools import lease_explorer, return_explorer
from core.settings import Settings
from core.temporal import custody_data_converter
from models.db import Wallet
from models.payloads import LeaseRequest, LeaseReturn, RebalanceResult
from models.pools import pool_owner
from tests.conftest import HISTORIES, create_wallet, fund, random_address, wait_for_status, withdraw
from tests.support.pools import pool_settings, rebalance, with_pool
from worker import WORKFLOWS, build_worker


def _saved() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


def test_there_are_saved_histories_for_every_workflow():
    saved_types = {p.name.split("__")[0] for p in _saved()}
    assert {cls.__name__ for cls in WORKFLOWS} <= saved_types


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}})


@pytest.mark.parametrize("path", _saved(), ids=lambda p: p.stem)
async def test_saved_history_replays_against_current_code(path: Path):
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    await Replayer(workflows=list(WORKFLOWS), data_converter=custody_data_converter(Settings())).replay_workflow(history)


async def test_fresh_runs_replay_and_are_recorded_on_request(api, client):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    await fund(api, wallet, "10", asset="TUSD")
    await fund(api, wallet, "4")  # 2, and the rejected one's hold
    completed = (await withdraw(api, wallet, random_address(), "0.1")).json()
    token = (await withdraw(api, wallet, random_address(), "1.5", asset="TUSD")).json()
    failed = (await withdraw(api, wallet, random_address(), "50")).json()
    approved = (await withdraw(api, wallet, random_address(), "1.1")).json()
    cancelled = (await withdraw(api, wallet, random_address(), "1.2")).json()
    rejected = (await withdraw(api, wallet, random_address(), "1.3")).json()
    ops = {"Authorization": "Bearer dev-ops-key"}
    await wait_for_status(api, approved["id"], {"AWAITING_APPROVAL"})
    assert (await api.post(f"/v1/withdrawals/{approved['id']}/pause", json={"reason": "r"}, headers=ops)).status_code == 200
    assert (await api.post(f"/v1/withdrawals/{approved['id']}/approve", json={}, headers=ops)).status_code == 200
    assert (await api.post(f"/v1/withdrawals/{approved['id']}/resume", json={}, headers=ops)).status_code == 200
    await wait_for_status(api, cancelled["id"], {"AWAITING_APPROVAL"})
    assert (await api.post(f"/v1/withdrawals/{cancelled['id']}/cancel", json={}, headers=ops)).status_code == 200
    await wait_for_status(api, rejected["id"], {"AWAITING_APPROVAL"})
    assert (await api.post(f"/v1/withdrawals/{rejected['id']}/reject", json={"reason": "unknown desk"}, headers=ops)).status_code == 200
    expected = (
        (completed, "COMPLETED"),
        (token, "COMPLETED"),
        (failed, "FAILED"),
        (approved, "COMPLETED"),
        (cancelled, "CANCELLED"),
        (rejected, "CANCELLED"),
    )
    for withdrawal, status in expected:
        assert (await wait_for_status(api, withdrawal["id"], {"COMPLETED", "FAILED", "CANCELLED"}))["status"] == status

    runs = {
        "WithdrawalWorkflow__completed": f"withdrawal-{completed['id']}",
        "WithdrawalWorkflow__token_completed": f"withdrawal-{token['id']}",
        "WithdrawalWorkflow__insufficient_funds": f"withdrawal-{failed['id']}",
        "WithdrawalWorkflow__v2_paused_approved_resumed": f"withdrawal-{approved['id']}",
        "WithdrawalWorkflow__v2_cancelled_awaiting_approval": f"withdrawal-{cancelled['id']}",
        "WithdrawalWorkflow__v2_completed": f"withdrawal-{completed['id']}",
        # handlers-finish-before-end: the cancel's handler returns before the run ends
        "WithdrawalWorkflow__v5_cancelled_awaiting_approval": f"withdrawal-{cancelled['id']}",
        "WithdrawalWorkflow__v5_completed": f"withdrawal-{completed['id']}",
        "WithdrawalWorkflow__v5_rejected_awaiting_approval": f"withdrawal-{rejected['id']}",
        # status-recorded-by-steps: validate, sign and broadcast record their own status
        "WithdrawalWorkflow__v6_completed": f"withdrawal-{completed['id']}",
        "WithdrawalWorkflow__v6_token_completed": f"withdrawal-{token['id']}",
        "WithdrawalWorkflow__v6_insufficient_funds": f"withdrawal-{failed['id']}",
        "WithdrawalWorkflow__v6_paused_approved_resumed": f"withdrawal-{approved['id']}",
        "WithdrawalWorkflow__v6_cancelled_awaiting_approval": f"withdrawal-{cancelled['id']}",
        "WithdrawalWorkflow__v6_rejected_awaiting_approval": f"withdrawal-{rejected['id']}",
        # local-steps: validate-and-decide, reserve and finish run as local activities
        "WithdrawalWorkflow__v8_completed": f"withdrawal-{completed['id']}",
        "WithdrawalWorkflow__v8_token_completed": f"withdrawal-{token['id']}",
        "WithdrawalWorkflow__v8_insufficient_funds": f"withdrawal-{failed['id']}",
        "WithdrawalWorkflow__v8_paused_approved_resumed": f"withdrawal-{approved['id']}",
        "WithdrawalWorkflow__v8_cancelled_awaiting_approval": f"withdrawal-{cancelled['id']}",
        "WithdrawalWorkflow__v8_rejected_awaiting_approval": f"withdrawal-{rejected['id']}",
        # final-in-send-step: landed within the send step's finality wait, no await_confirmation
        "WithdrawalWorkflow__v9_completed": f"withdrawal-{completed['id']}",
        "WithdrawalWorkflow__v9_token_completed": f"withdrawal-{token['id']}",
        "WithdrawalWorkflow__v9_paused_approved_resumed": f"withdrawal-{approved['id']}",
        "WalletCreationWorkflow__created": f"wallet-{wallet['id']}",
    }
    async for execution in client.list_workflows(f"WorkflowType = 'FaucetWorkflow' AND WorkflowId STARTS_WITH 'fund-{wallet['id']}'"):
        runs["FaucetWorkflow__funded"] = execution.id
        runs["FaucetWorkflow__v2_funded_amount"] = execution.id  # faucet_fund: says what was funded
        break
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=custody_data_converter(Settings()))
    for name, workflow_id in runs.items():
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        await replayer.replay_workflow(history)
        if os.environ.get("CUSTODY_RECORD_HISTORIES") == "1" and not (HISTORIES / f"{name}.json").exists():
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_rebalance_run_replays_and_is_recorded(client, base_settings, task_queue, sessions):
    """One RebalanceWorkflow run doing all three steps: recovery (sweep), bank top-up, explorer
    creation (child wallet and withdrawal workflows)."""
    chain = f"pool{uuid.uuid4().hex[:8]}"
    settings = with_pool(
        base_settings,
        task_queue,
        chain,
        pool_settings(min_available_explorers=1, explorers_to_create=1, hodl_auto_approve_up_to="1"),
    )
    web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
    async with build_worker(client, settings, sessions):
        assert (await rebalance(client, settings, chain)).status == "COMPLETED"
        async with sessions() as session:
            hodl = (await session.exec(select(Wallet).where(Wallet.owner == pool_owner(chain), Wallet.label == "hodl"))).one()
        await web3.provider.make_request("anvil_setBalance", [hodl.address, hex(10**18)])
        assert (await rebalance(client, settings, chain)).explorers_created == 1
        lease = await lease_explorer(sessions, settings, LeaseRequest(chain=chain, leased_by="replay-test"))
        await return_explorer(sessions, LeaseReturn(chain=chain, lease_id=lease.lease_id, by="replay-test"))
        workflow_id = f"rebalance-{chain}-cycle"
        result: RebalanceResult = await rebalance(client, settings, chain, workflow_id=workflow_id)
        assert (result.recovered, result.banks_funded, result.explorers_created) == (1, 1, 1), result
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(workflows=list(WORKFLOWS), data_converter=custody_data_converter(Settings())).replay_workflow(history)
    name = "RebalanceWorkflow__cycle"
    if os.environ.get("CUSTODY_RECORD_HISTORIES") == "1" and not (HISTORIES / f"{name}.json").exists():
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_worker_validates_every_workflow_in_the_sandbox(client, settings, sessions):
    worker = build_worker(client, settings, sessions)  # raises if a workflow fails sandbox validation
    async with worker:
        assert worker.task_queue == settings.task_queue
