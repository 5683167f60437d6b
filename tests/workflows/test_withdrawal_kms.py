"""Withdrawals signed inside AWS KMS and Google Cloud KMS (local servers reached by the real client
libraries), end to end through the API and a worker: one per chain family and backend (EVM on
anvil with a secp256k1 key; Solana and Stellar on their devnets with an Ed25519 key made in the KMS),
each checked on chain; a KMS outage that only delays; a disabled key that fails cleanly."""

from __future__ import annotations

import asyncio
import os
import uuid

import httpx
import pytest
from google.cloud import kms_v1
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair as SolanaKeypair
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.signature import Signature
from stellar_sdk import Keypair as StellarKeypair
from stellar_sdk import ServerAsync, TransactionEnvelope
from stellar_sdk.client.aiohttp_client import AiohttpClient
from web3 import AsyncHTTPProvider, AsyncWeb3

from chains.stellar import parse_stroops
from core.settings import AwsKmsSettings, GcpKmsSettings, SolanaChainSettings, StellarChainSettings
from devnet.solana import SolanaDevnet
from devnet.stellar import StellarDevnet, run_stellar_devnet
from models.db import Wallet
from tests.conftest import ALICE, api_client, create_wallet, fund, random_address, wait_for_status, withdraw
from worker import build_worker

LAMPORTS = 10**9
STROOPS = 10**7
ED25519_SPEC = {"aws-kms": "ECC_NIST_EDWARDS25519", "gcp-kms": "EC_SIGN_ED25519"}


# Overrides conftest's stellar_devnet (the Solana one is conftest's): the devnet's default 30 s
# submission timeout, and no USDX issuer funded.
@pytest.fixture(scope="module")
async def stellar_devnet():  # type: ignore[no-untyped-def]
    async with run_stellar_devnet(host="127.0.0.1", port=0, close_interval_ms=100) as d:
        yield d


def _settings(base_settings, task_queue, backend, aws_server=None, gcp_server=None, chains=None):  # type: ignore[no-untyped-def]
    update = {"task_queue": task_queue, "signer_backend": backend}
    if chains:
        update["chains"] = {**base_settings.chains, **chains}
    if aws_server is not None:
        update["aws_kms"] = AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url, alias_prefix=f"t-{uuid.uuid4().hex[:8]}")
    if gcp_server is not None:
        update["gcp_kms"] = GcpKmsSettings(project="custody-test", key_ring=f"ring-{uuid.uuid4().hex[:8]}", endpoint=gcp_server.address)
    return base_settings.model_copy(update=update)


async def _key_ref(sessions, wallet_id: str) -> str:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        wallet = await session.get(Wallet, wallet_id)
    assert wallet is not None and wallet.key_ref
    return wallet.key_ref


async def _kms_key_spec(backend, key_ref, aws_server, gcp_server) -> str:  # type: ignore[no-untyped-def]
    """What the KMS itself says the wallet's key is (AWS KeySpec / Cloud KMS algorithm)."""
    if backend == "aws-kms":
        return aws_server.client("kms").describe_key(KeyId=key_ref)["KeyMetadata"]["KeySpec"]
    admin = gcp_server.async_client()
    try:
        version = await admin.get_crypto_key_version(request={"name": key_ref})
    finally:
        await admin.transport.close()
    return kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm(version.algorithm).name


async def _kms_wallet(api, sessions, backend, chain, aws_server, gcp_server) -> dict:  # type: ignore[no-untyped-def]
    response = await api.post("/v1/wallets", json={"chain": chain, "label": f"kms-{uuid.uuid4().hex[:8]}"}, headers=ALICE)
    assert response.status_code == 201, response.text
    wallet = response.json()
    assert wallet["status"] == "ACTIVE" and wallet["signer_backend"] == backend
    key_ref = await _key_ref(sessions, wallet["id"])
    assert key_ref.startswith("arn:aws:kms:" if backend == "aws-kms" else "projects/custody-test/")
    if chain != "anvil":  # the Ed25519 key was made in the KMS, not in the local keystore
        assert await _kms_key_spec(backend, key_ref, aws_server, gcp_server) == ED25519_SPEC[backend]
    return wallet


async def _evm_withdrawal_lands(api: httpx.AsyncClient, wallet: dict, settings) -> None:  # type: ignore[no-untyped-def]
    await fund(api, wallet, "1")
    destination = random_address()
    done = await wait_for_status(api, (await withdraw(api, wallet, destination, "0.2")).json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
    try:
        assert (await web3.eth.get_transaction(done["tx_hash"]))["from"] == wallet["address"]
        assert await web3.eth.get_balance(destination) == 2 * 10**17
    finally:
        await web3.provider.disconnect()


async def _solana_withdrawal_lands(api: httpx.AsyncClient, wallet: dict, devnet: SolanaDevnet) -> None:
    funded = await api.post(f"/v1/wallets/{wallet['id']}/fund", json={"amount": "1"}, headers=ALICE)
    assert funded.status_code == 200, funded.text
    destination = SolanaKeypair().pubkey()
    done = await wait_for_status(api, (await withdraw(api, wallet, str(destination), "0.25", asset="SOL")).json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    async with AsyncClient(devnet.url, commitment=Confirmed) as rpc:
        assert (await rpc.get_balance(destination, Confirmed)).value == LAMPORTS // 4
        signature = Signature.from_string(done["tx_hash"])
        landed = (await rpc.get_transaction(signature, "base64", Confirmed, max_supported_transaction_version=0)).value
    assert landed is not None and landed.transaction.meta.err is None
    tx = landed.transaction.transaction
    fee_payer = tx.message.account_keys[0]
    assert fee_payer == Pubkey.from_string(wallet["address"])
    assert tx.signatures[0] == signature and signature.verify(fee_payer, to_bytes_versioned(tx.message))


async def _stellar_withdrawal_lands(api: httpx.AsyncClient, wallet: dict, devnet: StellarDevnet) -> None:
    funded = await api.post(f"/v1/wallets/{wallet['id']}/fund", json={}, headers=ALICE)  # friendbot's fixed amount
    assert funded.status_code == 200, funded.text
    destination = StellarKeypair.random().public_key
    done = await wait_for_status(api, (await withdraw(api, wallet, destination, "2.5", asset="XLM")).json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    async with ServerAsync(devnet.url, client=AiohttpClient()) as horizon:
        account = await horizon.accounts().account_id(destination).call()
        tx = await horizon.transactions().transaction(done["tx_hash"]).call()
    native = next(b for b in account["balances"] if b["asset_type"] == "native")
    assert parse_stroops(native["balance"]) == 25 * STROOPS // 10
    assert tx["successful"] and tx["source_account"] == wallet["address"]
    envelope = TransactionEnvelope.from_xdr(tx["envelope_xdr"], devnet.network_passphrase)
    assert envelope.transaction.source.account_id == wallet["address"] and len(envelope.signatures) == 1
    signer = StellarKeypair.from_public_key(wallet["address"])
    assert envelope.signatures[0].signature_hint == signer.signature_hint()
    signer.verify(envelope.hash(), envelope.signatures[0].signature)  # raises BadSignatureError if not


BACKENDS = pytest.mark.parametrize("backend", ["aws-kms", "gcp-kms"])


@BACKENDS
async def test_evm_withdrawal_signed_in_kms_lands(backend, base_settings, task_queue, client, sessions, aws_server, gcp_server):  # type: ignore[no-untyped-def]
    settings = _settings(base_settings, task_queue, backend, aws_server, gcp_server)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await _kms_wallet(api, sessions, backend, "anvil", aws_server, gcp_server)
        await _evm_withdrawal_lands(api, wallet, settings)


@BACKENDS
async def test_sol_withdrawal_signed_in_kms_lands(  # type: ignore[no-untyped-def]
    backend, base_settings, task_queue, client, sessions, aws_server, gcp_server, solana_devnet
):
    solana = SolanaChainSettings(rpc_url=solana_devnet.url, faucet_enabled=True, poll_interval_seconds=0.2, fee_bump_after_seconds=1)
    settings = _settings(base_settings, task_queue, backend, aws_server, gcp_server, {"solana": solana})
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await _kms_wallet(api, sessions, backend, "solana", aws_server, gcp_server)
        await _solana_withdrawal_lands(api, wallet, solana_devnet)


@BACKENDS
async def test_xlm_withdrawal_signed_in_kms_lands(  # type: ignore[no-untyped-def]
    backend, base_settings, task_queue, client, sessions, aws_server, gcp_server, stellar_devnet
):
    stellar = StellarChainSettings(
        horizon_url=stellar_devnet.url,
        network_passphrase=stellar_devnet.network_passphrase,
        friendbot_url=stellar_devnet.friendbot_url,
        faucet_enabled=True,
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=2,
    )
    settings = _settings(base_settings, task_queue, backend, aws_server, gcp_server, {"stellar": stellar})
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await _kms_wallet(api, sessions, backend, "stellar", aws_server, gcp_server)
        await _stellar_withdrawal_lands(api, wallet, stellar_devnet)


async def test_kms_outage_holds_the_withdrawal_in_signing_until_it_returns(base_settings, task_queue, client, sessions, aws_server):
    settings = _settings(base_settings, task_queue, "aws-kms", aws_server=aws_server)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await fund(api, wallet, "1")
        aws_server.set_faults({"Sign": {"error": "ThrottlingException", "count": 6}})
        try:
            accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
            # Two SDK attempts per activity attempt: four failed calls mean Temporal retried the
            # step at least once, and all that time the withdrawal waits in SIGNING.
            for _ in range(150):
                if aws_server.faults()["fired"].get("Sign", 0) >= 4:
                    break
                await asyncio.sleep(0.1)
            assert aws_server.faults()["fired"].get("Sign", 0) >= 4
            waiting = (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()
            assert waiting["status"] == "SIGNING" and waiting["attempts"] == []
        finally:
            aws_server.clear_faults()
        done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"}, timeout=90)
        assert done["status"] == "COMPLETED", done
        assert len(done["attempts"]) == 1


async def test_disabled_kms_key_fails_with_signing_failed_and_releases_the_hold(base_settings, task_queue, client, sessions, aws_server):
    settings = _settings(base_settings, task_queue, "aws-kms", aws_server=aws_server)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await fund(api, wallet, "1")
        aws_server.client("kms").disable_key(KeyId=await _key_ref(sessions, wallet["id"]))
        done = await wait_for_status(api, (await withdraw(api, wallet, random_address(), "0.1")).json()["id"], {"COMPLETED", "FAILED"})
        assert done["status"] == "FAILED" and done["error_code"] == "SIGNING_FAILED"
        assert done["attempts"] == [] and done["nonce"] is None
        balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
        assert next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"] == "0"


os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
