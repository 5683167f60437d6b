"""The `custody` CLI as a subprocess against a real HTTP API (uvicorn) and Temporal."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.conftest import custody, random_address


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}})


async def _until(api_url: str, withdrawal_id: str, statuses: set[str], timeout: float = 60) -> dict:
    for _ in range(int(timeout / 0.3)):
        code, out, _ = await custody(api_url, "withdrawals", "show", withdrawal_id)
        body = json.loads(out)
        if body["status"] in statuses:
            return body
        await asyncio.sleep(0.3)
    raise AssertionError(f"stuck in {body['status']}")


async def test_operator_runbook_through_the_cli(api_url, settings):
    code, out, _ = await custody(api_url, "wallets", "create", "--chain", "anvil", "--label", "cli")
    assert code == 0, out
    wallet = json.loads(out)
    assert (await custody(api_url, "wallets", "fund", wallet["id"], "--amount", "3"))[0] == 0

    code, out, _ = await custody(
        api_url, "withdrawals", "create", "--wallet", wallet["id"], "--to", random_address(), "--asset", "ETH", "--amount", "2"
    )
    withdrawal = json.loads(out)
    await _until(api_url, withdrawal["id"], {"AWAITING_APPROVAL"})

    code, out, err = await custody(api_url, "withdrawals", "pause", withdrawal["id"], "--reason", "incident 7")
    assert code == 0 and "(paused)" in out, err
    code, _, err = await custody(api_url, "withdrawals", "approve", withdrawal["id"])
    assert code == 1 and "FORBIDDEN" in err  # alice cannot approve: no APPROVER role (403, was 401 before roles)
    code, out, err = await custody(api_url, "withdrawals", "approve", withdrawal["id"], key="dev-ops-key")
    assert code == 0, err
    code, out, _ = await custody(api_url, "withdrawals", "list", "--status", "AWAITING_APPROVAL")
    assert withdrawal["id"] in out and "True" in out

    code, out, _ = await custody(api_url, "withdrawals", "resume", withdrawal["id"])
    assert code == 0
    done = await _until(api_url, withdrawal["id"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["status"] == "COMPLETED" and done["approved_by"] == "ops"
    code, _, err = await custody(api_url, "withdrawals", "cancel", withdrawal["id"])
    assert code == 1 and "CANCEL_TOO_LATE" in err


async def test_pause_all_on_a_chain_holds_every_running_withdrawal(api_url, settings):
    _, out, _ = await custody(api_url, "wallets", "create", "--chain", "anvil", "--label", "batch")
    wallet = json.loads(out)
    await custody(api_url, "wallets", "fund", wallet["id"], "--amount", "5")
    ids = []
    for _ in range(2):
        _, out, _ = await custody(
            api_url, "withdrawals", "create", "--wallet", wallet["id"], "--to", random_address(), "--asset", "ETH", "--amount", "1.5"
        )
        ids.append(json.loads(out)["id"])
    for withdrawal_id in ids:
        await _until(api_url, withdrawal_id, {"AWAITING_APPROVAL"})
    code, out, err = await custody(
        api_url,
        "withdrawals",
        "pause-all",
        "--chain",
        "anvil",
        "--reason",
        "rpc down",
        "--task-queue",
        settings.task_queue,
        key="dev-ops-key",  # an operator's action, through the API
    )
    assert code == 0 and "paused 2 withdrawal(s)" in out, err
    await asyncio.sleep(1)
    for withdrawal_id in ids:
        body = json.loads((await custody(api_url, "withdrawals", "show", withdrawal_id))[1])
        assert body["paused"] is True and body["paused_reason"] == "rpc down"
