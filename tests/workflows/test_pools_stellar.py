"""Key pools on Stellar (Horizon-compatible devnet): explorers are created with create_account and
recovered with account_merge into their bank: the account, reserves included, is gone."""

from __future__ import annotations

import uuid

import httpx
import pytest

from core.settings import PoolSettings, StellarChainSettings
from devnet.stellar import StellarDevnet
from tests.conftest import OPS, wait_for_status
from tests.support.pools import approve, keys_of, rebalance, show, withdrawal
from tests.support.stellar import XLM, balance, friendbot


@pytest.fixture(scope="module")
def devnet(stellar_devnet: StellarDevnet) -> StellarDevnet:
    """This module's devnet is conftest's Stellar one (its `horizon` too)."""
    return stellar_devnet


@pytest.fixture
def chain() -> str:
    return f"xlm{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(base_settings, task_queue, chain, devnet):  # type: ignore[no-untyped-def]
    stellar = StellarChainSettings(
        horizon_url=devnet.url,
        network_passphrase=devnet.network_passphrase,
        friendbot_url=devnet.friendbot_url,
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=2,
    )
    pool = PoolSettings(
        min_available_explorers=1,
        explorers_to_create=2,
        explorer_target_balance="2",
        bank_target_balance="20",
        hodl_auto_approve_up_to="0",
        rebalance_interval_seconds=3600,
    )
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, chain: stellar}, "pools": {chain: pool}})


async def test_recovery_merges_the_explorer_into_its_bank(api, client, settings, chain, devnet, horizon):
    assert (await rebalance(client, settings, chain)).status == "COMPLETED"
    pool = await show(api, chain)
    hodl, bank = keys_of(pool, "hodl")[0], keys_of(pool, "bank")[0]
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(devnet.friendbot_url, params={"addr": hodl["address"]})).status_code == 200

    second = await rebalance(client, settings, chain)
    assert len(second.pending_approvals) == 1
    assert await balance(horizon, bank["address"]) is None  # HODL movement held: the bank does not exist yet
    await approve(api, second.pending_approvals[0])  # create_account of the bank with 20 XLM
    assert await balance(horizon, bank["address"]) == 20 * XLM
    third = await rebalance(client, settings, chain)
    assert third.explorers_created == 2, third
    pool = await show(api, chain)
    for explorer in keys_of(pool, "explorer", "AVAILABLE"):
        assert await balance(horizon, explorer["address"]) == 2 * XLM

    leased = (await api.post(f"/v1/pools/{chain}/explorers/lease", headers=OPS)).json()
    destination = await friendbot(devnet)
    used = await api.post(
        f"/v1/pools/{chain}/explorers/{leased['lease_id']}/withdrawals",
        json={"to": destination.public_key, "asset": "XLM", "amount": "0.5"},
        headers={**OPS, "Idempotency-Key": "xlm-use"},
    )
    assert used.status_code == 202, used.text
    assert (await wait_for_status(api, used.json()["id"], {"COMPLETED", "FAILED"}, headers=OPS))["status"] == "COMPLETED"
    assert (await api.post(f"/v1/pools/{chain}/explorers/{leased['lease_id']}/return", headers=OPS)).status_code == 200
    held = await balance(horizon, leased["address"])
    bank_before = await balance(horizon, bank["address"])

    fourth = await rebalance(client, settings, chain)
    assert fourth.recovered == 1 and fourth.explorers_created == 0, fourth
    assert await balance(horizon, leased["address"]) is None  # merged: the account no longer exists
    pool = await show(api, chain)
    recovered = next(k for k in pool["keys"] if k["wallet_id"] == leased["wallet_id"])
    sweep = await withdrawal(api, recovered["recovery_withdrawal_id"])
    assert recovered["state"] == "RECOVERED" and sweep["status"] == "COMPLETED"
    assert int(sweep["amount_base_units"]) == held - int(sweep["fee_paid_base_units"])
    assert await balance(horizon, bank["address"]) == bank_before + int(sweep["amount_base_units"])
    tx = await horizon.transactions().transaction(sweep["tx_hash"]).call()
    assert tx["successful"]

    for pending in [*third.pending_approvals, *fourth.pending_approvals]:
        await api.post(f"/v1/withdrawals/{pending}/cancel", json={"reason": "test over"}, headers=OPS)
