"""EVM withdrawals signed inside AWS KMS and Google Cloud KMS (local servers reached by the real
client libraries): happy paths, a KMS outage that only delays, a disabled key that fails cleanly."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
import pytest_asyncio
from web3 import AsyncHTTPProvider, AsyncWeb3

from core.settings import AwsKmsSettings, GcpKmsSettings
from devnet.aws_kms import run_aws_kms
from devnet.gcp_kms import run_gcp_kms
from models.db import Wallet
from tests.conftest import ALICE, api_client, create_wallet, fund, random_address, wait_for_status, withdraw
from worker import build_worker


@pytest.fixture(scope="module")
def aws_server():  # type: ignore[no-untyped-def]
    # boto3's default credential chain reads these; the local server accepts any.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.delenv("AWS_PROFILE", raising=False)
        with run_aws_kms(host="127.0.0.1", port=0) as srv:
            yield srv


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gcp_server():  # type: ignore[no-untyped-def]
    async with run_gcp_kms(host="127.0.0.1", port=0) as srv:
        yield srv


def _settings(base_settings, task_queue, backend, aws_server=None, gcp_server=None):  # type: ignore[no-untyped-def]
    update = {"task_queue": task_queue, "signer_backend": backend}
    if aws_server is not None:
        update["aws_kms"] = AwsKmsSettings(
            region=aws_server.region, endpoint_url=aws_server.endpoint_url, alias_prefix=f"t-{uuid.uuid4().hex[:8]}"
        )
    if gcp_server is not None:
        update["gcp_kms"] = GcpKmsSettings(
            project="custody-test", key_ring=f"ring-{uuid.uuid4().hex[:8]}", endpoint=gcp_server.address
        )
    return base_settings.model_copy(update=update)


async def _key_ref(sessions, wallet_id: str) -> str:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        wallet = await session.get(Wallet, wallet_id)
    assert wallet is not None and wallet.key_ref
    return wallet.key_ref


@pytest.mark.parametrize("backend", ["aws-kms", "gcp-kms"])
async def test_withdrawal_signed_in_kms_lands(backend, base_settings, task_queue, client, sessions, aws_server, gcp_server):
    settings = _settings(base_settings, task_queue, backend, aws_server, gcp_server)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        assert wallet["signer_backend"] == backend
        key_ref = await _key_ref(sessions, wallet["id"])
        assert key_ref.startswith("arn:aws:kms:" if backend == "aws-kms" else "projects/custody-test/")
        await fund(api, wallet, "1")
        destination = random_address()
        done = await wait_for_status(
            api, (await withdraw(api, wallet, destination, "0.2")).json()["id"], {"COMPLETED", "FAILED"}
        )
        assert done["status"] == "COMPLETED", done
        web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
        assert (await web3.eth.get_transaction(done["tx_hash"]))["from"] == wallet["address"]
        assert await web3.eth.get_balance(destination) == 2 * 10**17


async def test_kms_outage_holds_the_withdrawal_in_signing_until_it_returns(
    base_settings, task_queue, client, sessions, aws_server
):
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


async def test_disabled_kms_key_fails_with_signing_failed_and_releases_the_hold(
    base_settings, task_queue, client, sessions, aws_server
):
    settings = _settings(base_settings, task_queue, "aws-kms", aws_server=aws_server)
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await fund(api, wallet, "1")
        aws_server.client("kms").disable_key(KeyId=await _key_ref(sessions, wallet["id"]))
        done = await wait_for_status(
            api, (await withdraw(api, wallet, random_address(), "0.1")).json()["id"], {"COMPLETED", "FAILED"}
        )
        assert done["status"] == "FAILED" and done["error_code"] == "SIGNING_FAILED"
        assert done["attempts"] == [] and done["nonce"] is None
        balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
        assert next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"] == "0"


os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
