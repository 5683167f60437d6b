"""Status details that must not mislead (issue 15, item 6), on a real anvil: a final withdrawal is
never `paused`; its attempts end LANDED / NOT_LANDED; the workflow's result names the API's
tx_hash; one Idempotency-Key with "0.25" and "0.250" is a replay; an address without `0x` is
told so."""

from __future__ import annotations

import pytest

from models.payloads import WithdrawalResult
from tests.conftest import ALICE, create_wallet, fund, mining_paused, random_address, wait_for_status, withdraw

OPS = {"Authorization": "Bearer dev-ops-key"}
FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}, "approval_timeout_seconds": 600})


async def test_completed_withdrawal_attempt_landed_and_workflow_result_agree(api, client) -> None:  # type: ignore[no-untyped-def]
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    accepted = (await withdraw(api, wallet, random_address(), "0.25", key="details-1")).json()
    done = await wait_for_status(api, accepted["id"], FINAL)
    assert done["status"] == "COMPLETED", done
    assert [a["state"] for a in done["attempts"]] == ["LANDED"], done["attempts"]
    result = await client.get_workflow_handle(f"withdrawal-{accepted['id']}", result_type=WithdrawalResult).result()
    assert result.tx_hash == done["tx_hash"] == done["attempts"][0]["tx_hash"]


async def test_same_key_with_the_amount_written_differently_is_a_replay(api, worker) -> None:  # type: ignore[no-untyped-def]
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    to = random_address()
    first = await withdraw(api, wallet, to, "0.25", key="details-canonical")
    assert first.status_code == 202, first.text
    for written in ("0.250", "00.25", "0.2500000"):
        again = await withdraw(api, wallet, to, written, key="details-canonical")
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"], (written, again.text)
    other = await withdraw(api, wallet, to, "0.26", key="details-canonical")
    assert other.status_code == 409 and other.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    await wait_for_status(api, first.json()["id"], FINAL)


async def test_an_address_without_0x_is_told_so(api, worker) -> None:  # type: ignore[no-untyped-def]
    wallet = await create_wallet(api)
    bare = random_address()[2:]
    refused = await withdraw(api, wallet, bare, "0.1")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "INVALID_RECIPIENT" and "starts with 0x" in error["message"], error
    assert "checksum" not in error["message"]


async def test_a_cancelled_withdrawal_is_not_left_paused(api, client) -> None:  # type: ignore[no-untyped-def]
    wallet = await create_wallet(api)
    await fund(api, wallet, "3")
    accepted = (await withdraw(api, wallet, random_address(), "1.5")).json()  # above 1 ETH: awaits approval
    await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
    paused = await api.post(f"/v1/withdrawals/{accepted['id']}/pause", json={"reason": "checking"}, headers=OPS)
    assert paused.status_code == 200, paused.text
    assert (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()["paused"] is True
    cancelled = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={"reason": "typo"}, headers=OPS)
    assert cancelled.status_code == 200, cancelled.text
    done = await wait_for_status(api, accepted["id"], FINAL)
    assert done["status"] == "CANCELLED", done
    assert done["paused"] is False and done["paused_by"] is None and done["paused_reason"] is None, done
    result = await client.get_workflow_handle(f"withdrawal-{accepted['id']}", result_type=WithdrawalResult).result()
    assert result.tx_hash is None and done["tx_hash"] is None


async def test_a_withdrawal_paused_while_confirming_completes_unpaused(  # type: ignore[no-untyped-def]
    base_settings, task_queue, client, sessions, paused_anvil
) -> None:
    async with mining_paused(base_settings, task_queue, client, sessions, paused_anvil, bump_after=120) as (api, web3, wallet):
        accepted = (await withdraw(api, wallet, random_address(), "0.5")).json()
        await wait_for_status(api, accepted["id"], {"CONFIRMING"})
        paused = await api.post(f"/v1/withdrawals/{accepted['id']}/pause", json={"reason": "checking"}, headers=OPS)
        assert paused.status_code == 200, paused.text
        assert (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()["paused"] is True
        await web3.provider.make_request("evm_mine", [])  # the signed transfer lands all the same
        done = await wait_for_status(api, accepted["id"], FINAL)
        assert done["status"] == "COMPLETED", done
        assert done["paused"] is False and done["paused_by"] is None and done["paused_reason"] is None, done
        assert [a["state"] for a in done["attempts"]] == ["LANDED"]
