"""A Stellar network reset (a testnet reset, or our devnet restarted) re-creates accounts at new,
lower sequence numbers. Custody's sequence claims from before are stale: a new withdrawal must
take the account's next sequence from the chain, never the stale claim + 1 (every send would be
refused with tx_bad_seq and, once expired, re-signed at the same stale sequence, forever)."""

from __future__ import annotations

import uuid

import httpx
from stellar_sdk import Keypair, ServerAsync
from stellar_sdk.client.aiohttp_client import AiohttpClient

from core.settings import StellarChainSettings
from devnet import local
from devnet.stellar import run_stellar_devnet
from tests.conftest import ALICE, api_client, wait_for_status, withdraw
from worker import build_worker


async def _withdraw_xlm(api: httpx.AsyncClient, wallet: dict) -> dict:
    response = await withdraw(api, wallet, Keypair.random().public_key, "2", asset="XLM")
    assert response.status_code == 202, response.text
    return await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED", "CANCELLED"})


async def test_after_a_network_reset_withdrawals_take_the_accounts_new_sequence(base_settings, task_queue, client, sessions):
    port = local.free_port()
    async with run_stellar_devnet(port=port, close_interval_ms=100, submission_timeout=3) as devnet:
        chain = StellarChainSettings(
            horizon_url=devnet.url,
            network_passphrase=devnet.network_passphrase,
            friendbot_url=devnet.friendbot_url,
            faucet_enabled=True,
            poll_interval_seconds=0.2,
            fee_bump_after_seconds=1,
            timebounds_seconds=10,  # a stale attempt would expire (and be re-signed) within the test
        )
        settings = base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, "stellar": chain}})
        async with httpx.AsyncClient(timeout=30) as http:
            # Accounts created late in the first network get high sequence numbers (ledger << 32).
            assert (await http.post(f"{devnet.url}/_devnet/close_ledgers", json={"count": 40})).status_code == 200
        async with build_worker(client, settings, sessions), api_client(settings, client) as api:
            created = await api.post("/v1/wallets", json={"chain": "stellar", "label": f"reset-{uuid.uuid4().hex[:8]}"}, headers=ALICE)
            wallet = created.json()
            assert (await api.post(f"/v1/wallets/{wallet['id']}/fund", json={}, headers=ALICE)).status_code == 200
            before = await _withdraw_xlm(api, wallet)
            assert before["status"] == "COMPLETED", before
    old_sequence = before["nonce"]

    async with run_stellar_devnet(port=port, close_interval_ms=100, submission_timeout=3) as reset:
        async with build_worker(client, settings, sessions), api_client(settings, client) as api:
            assert (await api.post(f"/v1/wallets/{wallet['id']}/fund", json={}, headers=ALICE)).status_code == 200
            async with ServerAsync(reset.url, client=AiohttpClient()) as horizon:
                account = await horizon.accounts().account_id(wallet["address"]).call()
            new_sequence = int(account["sequence"])
            assert new_sequence + 1 < old_sequence  # the claim custody holds is above the account's next

            after = await _withdraw_xlm(api, wallet)
            assert after["status"] == "COMPLETED", after
            assert after["nonce"] == new_sequence + 1
            assert [a["nonce"] for a in after["attempts"]] == [new_sequence + 1]  # never the stale one
