"""Stellar withdrawals end to end: API -> Temporal workflow -> activities -> Horizon-compatible devnet.

One devnet per module (per xdist worker); each test gets its own task queue, worker and API with
a `stellar` chain pointed at it. Wallet keys live in the local keystore (ed25519).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import SecretStr
from stellar_sdk import Asset, Keypair, ServerAsync, TransactionBuilder
from stellar_sdk.exceptions import NotFoundError

from core.settings import Settings, StellarChainSettings, TokenSettings
from db.engine import SessionFactory
from devnet.stellar import StellarDevnet, run_stellar_devnet
from tests.conftest import ALICE, api_client, wait_for_status
from tests.conftest import STELLAR_ISSUER as ISSUER
from tests.support.stellar import XLM, balance, friendbot, sequence

FRIENDBOT_XLM = 10_000
USDX = Asset("USDX", ISSUER.public_key)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def devnet(stellar_devnet: StellarDevnet) -> StellarDevnet:
    """This module's devnet is conftest's Stellar one (its `horizon` too)."""
    return stellar_devnet


@pytest.fixture
def stellar_settings(base_settings: Settings, task_queue: str, devnet: StellarDevnet) -> Settings:
    chain = StellarChainSettings(
        horizon_url=devnet.url,
        network_passphrase=devnet.network_passphrase,
        friendbot_url=devnet.friendbot_url,
        faucet_enabled=True,
        tokens={"USDX": TokenSettings(address=f"USDX:{ISSUER.public_key}", decimals=7)},
        faucet_token_authority=SecretStr(ISSUER.secret),  # `fund` pays USDX from its issuer
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=2,
    )
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, "stellar": chain}})


@pytest.fixture
async def api(client, stellar_settings: Settings, sessions: SessionFactory, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    from worker import build_worker

    async with build_worker(client, stellar_settings, sessions, task_queue):
        async with api_client(stellar_settings, client) as http:
            yield http


# ----------------------------------------------------------------------------- helpers


async def stellar_wallet(api: httpx.AsyncClient, fund: bool = True) -> dict:
    response = await api.post("/v1/wallets", json={"chain": "stellar", "label": f"xlm-{uuid.uuid4().hex[:8]}"}, headers=ALICE)
    assert response.status_code == 201, response.text
    wallet = response.json()
    assert wallet["status"] == "ACTIVE" and wallet["address"].startswith("G") and len(wallet["address"]) == 56
    if fund:
        funded = await api.post(f"/v1/wallets/{wallet['id']}/fund", json={}, headers=ALICE)
        assert funded.status_code == 200, funded.text
    return wallet


async def withdraw(api: httpx.AsyncClient, wallet: dict, to: str, amount: str, asset: str = "XLM", memo: dict | None = None) -> dict:
    body = {"wallet_id": wallet["id"], "to": to, "asset": asset, "amount": amount}
    if memo is not None:
        body["memo"] = memo
    response = await api.post("/v1/withdrawals", json=body, headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.text
    return await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=45)


async def submit(horizon: ServerAsync, devnet: StellarDevnet, kp: Keypair, build) -> None:  # type: ignore[no-untyped-def]
    account = await horizon.load_account(kp.public_key)
    tx = build(TransactionBuilder(account, devnet.network_passphrase, base_fee=100).set_timeout(3600)).build()
    tx.sign(kp)
    await horizon.submit_transaction(tx, skip_memo_required_check=True)


async def wallet_trusts(api: httpx.AsyncClient, wallet: dict, asset: str = "USDX") -> dict:
    """The wallet's own change_trust, through the API (a TRUSTLINE operation to COMPLETED)."""
    response = await api.post(f"/v1/wallets/{wallet['id']}/trustlines", json={"asset": asset}, headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=45)
    assert done["status"] == "COMPLETED" and done["kind"] == "TRUSTLINE", done
    return done


@asynccontextmanager
async def devnet_http(devnet: StellarDevnet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=devnet.url, timeout=30) as http:
        yield http


# ----------------------------------------------------------------------------- tests


async def test_xlm_to_a_new_account_completes(api, horizon):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert balances["funded"] is True
    xlm = next(b for b in balances["balances"] if b["asset"] == "XLM")
    assert xlm["balance"] == "9999"  # 10,000 from friendbot minus the 1 XLM minimum balance
    seq = await sequence(horizon, wallet["address"])
    destination = Keypair.random().public_key

    done = await withdraw(api, wallet, destination, "2.5")
    assert done["status"] == "COMPLETED", done
    assert [e["status"] for e in done["history"]] == ["PENDING", "VALIDATING", "SIGNING", "BROADCASTING", "CONFIRMING", "COMPLETED"]
    assert done["nonce"] == seq + 1 and len(done["attempts"]) == 1
    assert done["fee_paid_base_units"] == "100" and done["block_number"]
    assert await balance(horizon, destination) == 25 * XLM // 10  # created by create_account
    assert await sequence(horizon, wallet["address"]) == seq + 1
    tx = await horizon.transactions().transaction(done["tx_hash"]).call()
    assert tx["successful"] and tx["source_account"] == wallet["address"]


async def test_credit_asset_with_text_memo_completes(api, horizon, devnet, stellar_settings, sessions):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    await wallet_trusts(api, wallet)
    await submit(horizon, devnet, ISSUER, lambda b: b.append_payment_op(wallet["address"], USDX, "100"))
    holder = await friendbot(devnet)
    await submit(horizon, devnet, holder, lambda b: b.append_change_trust_op(USDX))

    done = await withdraw(api, wallet, holder.public_key, "12.3456789", asset="USDX", memo={"type": "text", "value": "invoice-42"})
    assert done["status"] == "COMPLETED", done
    assert done["memo"] == {"type": "text", "value": "invoice-42"}
    assert await balance(horizon, holder.public_key, USDX) == 123_456_789
    assert await balance(horizon, wallet["address"], USDX) == 1_000_000_000 - 123_456_789
    tx = await horizon.transactions().transaction(done["tx_hash"]).call()
    assert (tx["memo_type"], tx["memo"]) == ("text", "invoice-42")


async def test_destination_without_trustline_fails_before_sending(api, horizon, devnet, stellar_settings, sessions):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    await wallet_trusts(api, wallet)
    await submit(horizon, devnet, ISSUER, lambda b: b.append_payment_op(wallet["address"], USDX, "10"))
    stranger = await friendbot(devnet)
    seq = await sequence(horizon, wallet["address"])

    done = await withdraw(api, wallet, stranger.public_key, "1", asset="USDX")
    assert done["status"] == "FAILED" and done["error_code"] == "RECIPIENT_NO_TRUSTLINE", done
    assert done["attempts"] == [] and done["tx_hash"] is None
    assert await sequence(horizon, wallet["address"]) == seq
    assert await balance(horizon, wallet["address"], USDX) == 10 * XLM


async def test_memo_required_destination_without_memo_fails(api, horizon, devnet):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    exchange = await friendbot(devnet)
    await submit(horizon, devnet, exchange, lambda b: b.append_manage_data_op("config.memo_required", "1"))
    seq = await sequence(horizon, wallet["address"])
    before = await balance(horizon, exchange.public_key)

    done = await withdraw(api, wallet, exchange.public_key, "5")
    assert done["status"] == "FAILED" and done["error_code"] == "MEMO_REQUIRED", done
    assert done["attempts"] == [] and done["tx_hash"] is None
    assert await sequence(horizon, wallet["address"]) == seq
    assert await balance(horizon, exchange.public_key) == before

    done = await withdraw(api, wallet, exchange.public_key, "5", memo={"type": "id", "value": "77"})
    assert done["status"] == "COMPLETED", done
    assert await balance(horizon, exchange.public_key) == before + 5 * XLM
    tx = await horizon.transactions().transaction(done["tx_hash"]).call()
    assert (tx["memo_type"], tx["memo"]) == ("id", "77")


async def test_lost_response_completes_with_exactly_one_application(api, horizon, devnet):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    destination = Keypair.random().public_key
    seq = await sequence(horizon, wallet["address"])
    before = await balance(horizon, wallet["address"])
    async with devnet_http(devnet) as http:
        r = await http.post("/_devnet/fail_next_submissions", json={"count": 1, "status": 504})
        assert r.json()["pending_failures"] == 1

    done = await withdraw(api, wallet, destination, "3")
    assert done["status"] == "COMPLETED", done
    assert len(done["attempts"]) == 1
    assert await balance(horizon, destination) == 3 * XLM
    assert await sequence(horizon, wallet["address"]) == seq + 1
    assert await balance(horizon, wallet["address"]) == before - 3 * XLM - 100
    history = await horizon.transactions().for_account(wallet["address"]).order(desc=True).limit(10).call()
    assert [r["hash"] for r in history["_embedded"]["records"]].count(done["tx_hash"]) == 1


async def test_expired_attempt_is_resigned_in_the_same_sequence_and_lands_once(api, horizon, devnet):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    destination = Keypair.random().public_key
    seq = await sequence(horizon, wallet["address"])
    async with devnet_http(devnet) as http:
        # The first two sends never reach the ledger (dropped, 504): the broadcast step retries.
        await http.post("/_devnet/fail_next_submissions", json={"count": 2, "status": 504, "apply": False})
        response = await api.post(
            "/v1/withdrawals",
            json={"wallet_id": wallet["id"], "to": destination, "asset": "XLM", "amount": "4"},
            headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert response.status_code == 202, response.text
        signed = await wait_for_status(api, response.json()["id"], {"BROADCASTING", "CONFIRMING", "COMPLETED", "FAILED"})
        assert len(signed["attempts"]) == 1
        # Meanwhile the network's clock passes the attempt's max_time: it can never apply now.
        await http.post("/_devnet/advance_time", json={"seconds": 400})
        await http.post("/_devnet/close_ledgers", json={"count": 1})

    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"}, timeout=45)
    assert done["status"] == "COMPLETED", done
    first, second = done["attempts"]
    assert first["nonce"] == second["nonce"] == seq + 1  # the dead slot is reused, with new timebounds
    assert done["tx_hash"] == second["tx_hash"] != first["tx_hash"]
    assert (first["state"], second["state"]) == ("NOT_LANDED", "LANDED")  # expired, then the one on chain
    assert await balance(horizon, destination) == 4 * XLM
    assert await sequence(horizon, wallet["address"]) == seq + 1
    with pytest.raises(NotFoundError):
        await horizon.transactions().transaction(first["tx_hash"]).call()


async def test_concurrent_withdrawals_take_consecutive_sequences(api, horizon):  # type: ignore[no-untyped-def]
    import asyncio

    wallet = await stellar_wallet(api)
    seq = await sequence(horizon, wallet["address"])
    destinations = [Keypair.random().public_key for _ in range(3)]
    finals = await asyncio.gather(*(withdraw(api, wallet, d, "1.5") for d in destinations))
    assert [f["status"] for f in finals] == ["COMPLETED"] * 3, finals
    assert sorted(f["nonce"] for f in finals) == [seq + 1, seq + 2, seq + 3]
    assert await sequence(horizon, wallet["address"]) == seq + 3
    for d in destinations:
        assert await balance(horizon, d) == 15 * XLM // 10


async def test_a_trustline_lets_the_wallet_hold_a_credit_asset(api, horizon, devnet):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    seq = await sequence(horizon, wallet["address"])
    before = await balance(horizon, wallet["address"])

    done = await wallet_trusts(api, wallet)
    assert done["to"] == wallet["address"] and done["amount_base_units"] == "0" and len(done["attempts"]) == 1
    assert [e["status"] for e in done["history"]] == ["PENDING", "VALIDATING", "SIGNING", "BROADCASTING", "CONFIRMING", "COMPLETED"]
    tx = await horizon.transactions().transaction(done["tx_hash"]).call()
    assert tx["successful"] and tx["source_account"] == wallet["address"]
    assert await sequence(horizon, wallet["address"]) == seq + 1
    assert await balance(horizon, wallet["address"]) == before - 100  # the fee; 0.5 XLM is now reserved
    assert await balance(horizon, wallet["address"], USDX) == 0  # the trustline exists, empty
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()["balances"]
    assert next(b for b in balances if b["asset"] == "XLM")["balance"] == "9998.49999"  # 1.5 XLM of reserves

    await submit(horizon, devnet, ISSUER, lambda b: b.append_payment_op(wallet["address"], USDX, "7"))
    assert await balance(horizon, wallet["address"], USDX) == 7 * XLM


async def test_trustline_requests_are_validated_with_stable_codes(api, horizon):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api, fund=False)
    unfunded = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert unfunded["funded"] is False  # no account on chain until its first 1 XLM
    assert {b["asset"]: b["balance"] for b in unfunded["balances"]} == {"XLM": "0", "USDX": "0"}
    key = {**ALICE, "Idempotency-Key": uuid.uuid4().hex}
    native = await api.post(f"/v1/wallets/{wallet['id']}/trustlines", json={"asset": "XLM"}, headers=key)
    assert native.status_code == 422 and native.json()["error"]["code"] == "VALIDATION_ERROR", native.text
    unknown = await api.post(f"/v1/wallets/{wallet['id']}/trustlines", json={"asset": "NOPE"}, headers=key)
    assert unknown.json()["error"]["code"] == "UNKNOWN_ASSET", unknown.text
    anvil = (await api.post("/v1/wallets", json={"chain": "anvil", "label": f"e-{uuid.uuid4().hex[:6]}"}, headers=ALICE)).json()
    evm = await api.post(f"/v1/wallets/{anvil['id']}/trustlines", json={"asset": "TUSD"}, headers=key)
    assert evm.status_code == 404 and evm.json()["error"]["code"] == "NOT_AVAILABLE", evm.text

    # An unfunded wallet cannot pay the fee and the reserve: FAILED before anything is signed.
    response = await api.post(f"/v1/wallets/{wallet['id']}/trustlines", json={"asset": "USDX"}, headers=key)
    assert response.status_code == 202, response.text
    assert (await api.post(f"/v1/wallets/{wallet['id']}/trustlines", json={"asset": "USDX"}, headers=key)).status_code == 200
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"}, timeout=45)
    assert done["status"] == "FAILED" and done["error_code"] == "INSUFFICIENT_FUNDS" and done["attempts"] == [], done


async def test_a_refused_fee_never_fails_the_withdrawal_and_is_resigned_once_dead(client, base_settings, task_queue, sessions):  # type: ignore[no-untyped-def]
    """Surge pricing: the network's fee rises after signing (tx_insufficient_fee, nothing
    consumed). The same bytes are re-sent while they live; once their timebounds pass on the
    network, the transfer is signed again in the same sequence with the fee of that moment."""
    from worker import build_worker

    # Manual ledger closes: the fee rise stays invisible to the signer until a ledger closes.
    async with run_stellar_devnet(port=0, close_interval_ms=0) as manual, httpx.AsyncClient(base_url=manual.url, timeout=30) as http:
        chain = StellarChainSettings(
            horizon_url=manual.url,
            network_passphrase=manual.network_passphrase,
            friendbot_url=manual.friendbot_url,
            faucet_enabled=True,
            poll_interval_seconds=0.2,
            fee_bump_after_seconds=1,
        )
        settings = base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, "stellar": chain}})
        async with build_worker(client, settings, sessions), api_client(settings, client) as api:
            wallet = await stellar_wallet(api)
            await http.post("/_devnet/set_base_fee", json={"stroops": 300})
            response = await api.post(
                "/v1/withdrawals",
                json={"wallet_id": wallet["id"], "to": Keypair.random().public_key, "asset": "XLM", "amount": "6"},
                headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert response.status_code == 202, response.text
            refused = await wait_for_status(api, response.json()["id"], {"CONFIRMING", "COMPLETED", "FAILED"})
            assert refused["status"] == "CONFIRMING" and len(refused["attempts"]) == 1, refused
            await http.post("/_devnet/advance_time", json={"seconds": 400})
            await http.post("/_devnet/close_ledgers", json={"count": 1})
            done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"}, timeout=45)
    assert done["status"] == "COMPLETED", done
    first, second = done["attempts"]
    assert first["nonce"] == second["nonce"] and done["tx_hash"] == second["tx_hash"]
    assert done["fee_paid_base_units"] == "300"


async def test_fund_says_what_friendbot_paid_refuses_a_repeat_and_pays_the_test_asset(api, horizon):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api, fund=False)
    url = f"/v1/wallets/{wallet['id']}/fund"
    given = await api.post(url, json={"amount": "5"}, headers=ALICE)  # friendbot decides the amount
    assert given.status_code == 422 and given.json()["error"]["code"] == "INVALID_AMOUNT", given.text
    funded = await api.post(url, json={}, headers=ALICE)
    assert funded.status_code == 200, funded.text
    assert funded.json()["amount"] == "10000" and funded.json()["amount_base_units"] == str(10_000 * XLM)
    assert await balance(horizon, wallet["address"]) == 10_000 * XLM
    again = await api.post(url, json={}, headers=ALICE)
    assert again.status_code == 409 and again.json()["error"]["code"] == "ALREADY_FUNDED", again.text

    untrusted = await api.post(url, json={"asset": "USDX", "amount": "3"}, headers=ALICE)
    assert untrusted.status_code == 422 and untrusted.json()["error"]["code"] == "RECIPIENT_NO_TRUSTLINE", untrusted.text
    await wallet_trusts(api, wallet)
    paid = await api.post(url, json={"asset": "USDX", "amount": "3"}, headers=ALICE)
    assert paid.status_code == 200 and paid.json()["amount"] == "3", paid.text
    assert await balance(horizon, wallet["address"], USDX) == 3 * XLM


async def test_a_first_payment_below_one_xlm_is_refused_at_the_api(api, horizon):  # type: ignore[no-untyped-def]
    wallet = await stellar_wallet(api)
    new = Keypair.random().public_key
    response = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": wallet["id"], "to": new, "asset": "XLM", "amount": "0.5"},
        headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "BELOW_ACCOUNT_MINIMUM" and error["details"]["minimum"] == str(XLM), error
    assert await balance(horizon, new) is None
