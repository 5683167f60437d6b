"""A withdrawal whose signed transaction was refused when sent ends FAILED (nothing went out) but
its bytes exist and could still land. `retry` must never let both pay:

- EVM: the retry signs at the original's own released nonce, so at most one of the two is mined;
- Solana: the original's blockhash is still valid, so retry answers 409 ATTEMPT_MAY_STILL_LAND
  until it has provably expired, then resubmits once.

The refusal is real: the withdrawal is paused while its KMS signature is slow (the pause holds it
after signing), the wallet's balance is taken away on the node, and the send is refused for
insufficient funds when it resumes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair as SolanaKeypair
from solders.pubkey import Pubkey
from sqlmodel import select
from web3 import AsyncHTTPProvider, AsyncWeb3

from core.settings import AwsKmsSettings, SolanaChainSettings
from devnet.solana import SolanaDevnet
from models.db import TransferAttempt
from tests.conftest import (
    ALICE,
    api_client,
    create_wallet,
    random_address,
    replay_and_record,
    wait_for_status,
    withdraw,
)
from worker import build_worker

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}
LAMPORTS = 10**9


def _kms_settings(base_settings, task_queue, aws_server, **chains):  # type: ignore[no-untyped-def]
    kms = AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url, alias_prefix=f"t-{uuid.uuid4().hex[:8]}")
    return base_settings.model_copy(
        update={"task_queue": task_queue, "signer_backend": "aws-kms", "aws_kms": kms, "chains": {**base_settings.chains, **chains}}
    )


@asynccontextmanager
async def _while_kms_signs(api: httpx.AsyncClient, aws_server, wallet: dict, to: str, amount: str, asset: str = "ETH") -> AsyncIterator[dict]:  # type: ignore[no-untyped-def]
    """A withdrawal whose signature takes 3 s, yielded once KMS has its Sign request."""
    signs_before = (await asyncio.to_thread(aws_server.faults))["fired"].get("Sign", 0)
    aws_server.set_faults({"Sign": {"error": None, "delay": 3, "count": 1}})
    try:
        accepted = (await withdraw(api, wallet, to, amount, asset=asset)).json()
        await wait_for_status(api, accepted["id"], {"SIGNING"})
        for _ in range(500):
            if (await asyncio.to_thread(aws_server.faults))["fired"].get("Sign", 0) > signs_before:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("KMS never received the Sign request")
        yield accepted
    finally:
        aws_server.clear_faults()


async def _signed_then_held(api: httpx.AsyncClient, aws_server, wallet: dict, to: str, amount: str, asset: str) -> dict:  # type: ignore[no-untyped-def]
    """Start a withdrawal whose signature takes 3 s, pause it meanwhile: it holds after signing.
    The pause waits until KMS has the Sign request: one that lands before signing's access
    re-check is a hold that refuses to sign (ON_HOLD), which is not what this test is about
    (fresh-clone run 71: paused 51 ms after SIGNING was recorded, the signature never made)."""
    async with _while_kms_signs(api, aws_server, wallet, to, amount, asset) as accepted:
        assert (await api.post(f"/v1/withdrawals/{accepted['id']}/pause", json={}, headers=ALICE)).status_code == 200
        for _ in range(150):
            body = (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()
            if body["attempts"]:
                return body
            await asyncio.sleep(0.1)
        raise AssertionError(f"never signed: {body}")


async def test_a_cancel_made_while_signing_sends_nothing_and_the_next_withdrawal_pays(base_settings, task_queue, client, sessions, aws_server):
    """Signing and sending are one activity (one-send-step), but a cancellation made while the
    signature is being made still stops it before anything goes out: the activity finds the
    cancellation recorded, returns unsent, and the workflow cancels at its checkpoint. The
    signed nonce is not left as a gap: the wallet's next withdrawal completes."""
    settings = _kms_settings(base_settings, task_queue, aws_server)
    web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await web3.provider.make_request("anvil_setBalance", [wallet["address"], hex(10**18)])
        async with _while_kms_signs(api, aws_server, wallet, random_address(), "0.3") as accepted:
            cancelled = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={"reason": "wrong address"}, headers=ALICE)
            assert cancelled.status_code == 200, cancelled.text
        done = await wait_for_status(api, accepted["id"], FINAL)
        assert done["status"] == "CANCELLED", done
        assert len(done["attempts"]) == 1  # signed while the cancellation was made, never sent
        assert "BROADCASTING" not in [e["status"] for e in done["history"]]
        assert await web3.eth.get_transaction_count(wallet["address"]) == 0

        destination = random_address()
        after = (await withdraw(api, wallet, destination, "0.2")).json()
        paid = await wait_for_status(api, after["id"], FINAL, timeout=90)
        assert paid["status"] == "COMPLETED", paid
        assert await web3.eth.get_balance(destination) == 2 * 10**17
        await replay_and_record(client, f"withdrawal-{accepted['id']}", "WithdrawalWorkflow__v9_cancelled_while_signing")


async def test_evm_retry_of_a_refused_send_takes_the_original_nonce_and_pays_once(base_settings, task_queue, client, sessions, aws_server):
    settings = _kms_settings(base_settings, task_queue, aws_server)
    web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await web3.provider.make_request("anvil_setBalance", [wallet["address"], hex(10**18)])
        destination = random_address()
        held = await _signed_then_held(api, aws_server, wallet, destination, "0.3", "ETH")
        original_tx = held["attempts"][0]["tx_hash"]
        await web3.provider.make_request("anvil_setBalance", [wallet["address"], hex(10**12)])
        assert (await api.post(f"/v1/withdrawals/{held['id']}/resume", json={}, headers=ALICE)).status_code == 200
        failed = await wait_for_status(api, held["id"], FINAL)
        assert failed["status"] == "FAILED" and failed["error_code"] == "INSUFFICIENT_FUNDS", failed
        # one-send-step: signed, not sent (held meanwhile), then sent by broadcast_transfer on resume
        await replay_and_record(client, f"withdrawal-{held['id']}", "WithdrawalWorkflow__v9_held_after_signing")

        await web3.provider.make_request("anvil_setBalance", [wallet["address"], hex(10**18)])
        retried = await api.post(f"/v1/withdrawals/{held['id']}/retry", headers=ALICE)
        assert retried.status_code == 202, retried.text
        done = await wait_for_status(api, retried.json()["id"], FINAL)
        assert done["status"] == "COMPLETED" and done["nonce"] == failed["nonce"] == 0, done
        # The original's bytes are now unusable: the nonce is taken by the retry.
        sent = await web3.provider.make_request("eth_sendRawTransaction", [await _raw_of(sessions, original_tx)])
        assert "error" in sent and "nonce" in sent["error"]["message"].lower(), sent
        assert await web3.eth.get_balance(destination) == 3 * 10**17
        assert await web3.eth.get_transaction_count(wallet["address"]) == 1


async def test_solana_retry_waits_until_the_refused_attempt_has_expired(
    base_settings, task_queue, client, sessions, aws_server, solana_devnet: SolanaDevnet
):
    solana = SolanaChainSettings(
        rpc_url=solana_devnet.url,
        faucet_enabled=True,
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=1,
        commitment="confirmed",
    )
    settings = _kms_settings(base_settings, task_queue, aws_server, solana=solana)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        response = await api.post("/v1/wallets", json={"chain": "solana", "label": f"r-{uuid.uuid4().hex[:8]}"}, headers=ALICE)
        wallet = response.json()
        assert (await api.post(f"/v1/wallets/{wallet['id']}/fund", json={"amount": "2"}, headers=ALICE)).status_code == 200
        destination = str(SolanaKeypair().pubkey())
        held = await _signed_then_held(api, aws_server, wallet, destination, "1", "SOL")
        await solana_devnet.control("devnet_setAccount", {"pubkey": wallet["address"], "lamports": 10_000_000})
        assert (await api.post(f"/v1/withdrawals/{held['id']}/resume", json={}, headers=ALICE)).status_code == 200
        failed = await wait_for_status(api, held["id"], FINAL)
        assert failed["status"] == "FAILED" and failed["error_code"] == "INSUFFICIENT_FUNDS", failed
        # one-send-step: signed, not sent (held meanwhile), then sent by broadcast_transfer on resume
        await replay_and_record(client, f"withdrawal-{held['id']}", "WithdrawalWorkflow__v9_held_after_signing_solana")

        refused = await api.post(f"/v1/withdrawals/{held['id']}/retry", headers=ALICE)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "ATTEMPT_MAY_STILL_LAND"

        await solana_devnet.control("devnet_setAccount", {"pubkey": wallet["address"], "lamports": 2 * LAMPORTS})
        await solana_devnet.control("devnet_expireBlockhashes", {})
        retried = await api.post(f"/v1/withdrawals/{held['id']}/retry", headers=ALICE)
        assert retried.status_code == 202, retried.text
        done = await wait_for_status(api, retried.json()["id"], FINAL)
        assert done["status"] == "COMPLETED", done
        async with AsyncClient(solana_devnet.url, commitment=Confirmed) as rpc:
            assert (await rpc.get_balance(Pubkey.from_string(destination), Confirmed)).value == LAMPORTS


async def _raw_of(sessions, tx_hash: str) -> str:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        attempt = (await session.exec(select(TransferAttempt).where(TransferAttempt.tx_hash == tx_hash))).one()
    return "0x" + attempt.raw_tx.removeprefix("0x")
