"""Reconciliation end to end: real anvil, the Solana and Stellar devnets, Temporal and PostgreSQL.

Each test uses its own chain names (so its wallets, discovery cursors and reports are its own) on
the shared nodes. A healthy wallet (faucet funding, withdrawals, a payment to another custody
wallet, deposits sent from outside custody) reconciles to zero drift on every chain; a transfer
signed with a custody key outside custody (the keystore used directly) shows up as an
unexplained spend and as drift; a COMPLETED withdrawal whose block is reverted away on anvil is
reported as vanished.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair as SolanaKeypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    initialize_mint2,
    mint_to_checked,
)
from spl.token.models import InitializeMint2Params, MintToCheckedParams
from sqlmodel import select
from stellar_sdk import Asset, ServerAsync, TransactionBuilder
from stellar_sdk import Keypair as StellarKeypair
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.service import RPCError
from temporalio.worker import Replayer
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import TransactionNotFound

from chains.base import TransferIntent
from chains.registry import ChainRegistry
from core.settings import (
    ChannelSettings,
    EvmChainSettings,
    ReconciliationSettings,
    Settings,
    SolanaChainSettings,
    StellarChainSettings,
    TokenSettings,
)
from core.temporal import custody_data_converter
from db.engine import SessionFactory
from devnet.local import ROOT
from devnet.solana import SolanaDevnet
from devnet.stellar import StellarDevnet
from models.db import Wallet
from models.reconciliation import ReconciliationEvent
from signers.registry import SignerSet
from tests.conftest import ALICE, HISTORIES, TOKEN_DECIMALS, api_client, random_address, send_signed, wait_exit, wait_for_status, worker_process
from tests.conftest import STELLAR_ISSUER as ISSUER
from tests.support.stellar import run_channels
from worker import WORKFLOWS, build_worker, ensure_reconciliation_schedules

OPS = {"Authorization": "Bearer dev-ops-key"}
ETH = 10**18
SOL = 10**9
XLM = 10**7
USDX = Asset("USDX", ISSUER.public_key)


# ----------------------------------------------------------------------------- fixtures
# The Solana and Stellar devnets, their clients and the USDX issuer are conftest's (one per module).


@pytest.fixture(scope="module")
async def spl_mint_authority(rpc: AsyncClient) -> SolanaKeypair:
    """Like conftest's `mint_authority`, and waits until its airdrop shows in its balance."""
    authority = SolanaKeypair()
    await rpc.request_airdrop(authority.pubkey(), 100 * SOL)
    await _until(lambda: _lamports(rpc, authority.pubkey()), lambda v: v > 0)
    return authority


@pytest.fixture(scope="module")
async def spl_mint(rpc: AsyncClient, spl_mint_authority: SolanaKeypair) -> Pubkey:
    mint = SolanaKeypair()
    rent = (await rpc.get_minimum_balance_for_rent_exemption(82)).value
    await send_signed(
        rpc,
        spl_mint_authority,
        [
            create_account(
                CreateAccountParams(from_pubkey=spl_mint_authority.pubkey(), to_pubkey=mint.pubkey(), lamports=rent, space=82, owner=TOKEN_PROGRAM_ID)
            ),
            initialize_mint2(
                InitializeMint2Params(
                    decimals=TOKEN_DECIMALS, program_id=TOKEN_PROGRAM_ID, mint=mint.pubkey(), mint_authority=spl_mint_authority.pubkey()
                )
            ),
        ],
        (mint,),
    )
    await _until(lambda: _lamports(rpc, mint.pubkey()), lambda v: v > 0)
    return mint.pubkey()


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"evm": f"evm{tag}", "solana": f"sol{tag}", "stellar": f"xlm{tag}"}


@pytest.fixture
def settings(
    base_settings: Settings,
    task_queue: str,
    names: dict[str, str],
    token_address: str,
    solana_devnet: SolanaDevnet,
    spl_mint: Pubkey,
    stellar_devnet: StellarDevnet,
) -> Settings:
    anvil = base_settings.chains["anvil"]
    assert isinstance(anvil, EvmChainSettings)
    chains = {
        **base_settings.chains,
        names["evm"]: EvmChainSettings(
            chain_id=31337,
            rpc_url=anvil.rpc_url,
            finality="depth",
            confirmations=1,
            faucet_enabled=True,
            tokens={"TUSD": TokenSettings(address=token_address, decimals=TOKEN_DECIMALS)},
            poll_interval_seconds=0.2,
            fee_bump_after_seconds=30,
        ),
        names["solana"]: SolanaChainSettings(
            rpc_url=solana_devnet.url,
            faucet_enabled=True,
            tokens={"TUSD": TokenSettings(address=str(spl_mint), decimals=TOKEN_DECIMALS)},
            poll_interval_seconds=0.2,
            fee_bump_after_seconds=1,
        ),
        names["stellar"]: StellarChainSettings(
            horizon_url=stellar_devnet.url,
            network_passphrase=stellar_devnet.network_passphrase,
            friendbot_url=stellar_devnet.friendbot_url,
            faucet_enabled=True,
            tokens={"USDX": TokenSettings(address=f"USDX:{ISSUER.public_key}", decimals=7)},
            poll_interval_seconds=0.2,
            fee_bump_after_seconds=2,
            channels=ChannelSettings(count=2),
        ),
    }
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": chains})


@pytest.fixture
async def api(client: Client, settings: Settings, sessions: SessionFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with build_worker(client, settings, sessions):
        async with api_client(settings, client) as http:
            yield http


# ----------------------------------------------------------------------------- helpers


async def _until(read, done, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last value {value!r}")
        await asyncio.sleep(0.2)


async def _lamports(rpc: AsyncClient, key: Pubkey) -> int:
    return int((await rpc.get_balance(key, Confirmed)).value)


async def wallet_on(api: httpx.AsyncClient, chain: str) -> dict:
    response = await api.post("/v1/wallets", json={"chain": chain, "label": f"r-{uuid.uuid4().hex[:6]}"}, headers=ALICE)
    assert response.status_code == 201, response.text
    return response.json()


async def fund(api: httpx.AsyncClient, wallet: dict, amount: str, asset: str | None = None) -> None:
    body = ({"amount": amount} if amount else {}) | ({"asset": asset} if asset else {})
    response = await api.post(f"/v1/wallets/{wallet['id']}/fund", json=body, headers=ALICE)
    assert response.status_code == 200, response.text


async def withdraw(api: httpx.AsyncClient, wallet: dict, to: str, amount: str, asset: str) -> dict:
    response = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": wallet["id"], "to": to, "asset": asset, "amount": amount},
        headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=60)
    assert done["status"] == "COMPLETED", done
    return done


async def reconcile(api: httpx.AsyncClient, chain: str) -> dict:
    """POST .../runs (a ReconciliationWorkflow now), then the same report through GET."""
    response = await api.post(f"/v1/admin/reconciliation/{chain}/runs", params={"wait_seconds": 55}, headers=OPS)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["state"] == "COMPLETED", run
    latest = await api.get(f"/v1/admin/reconciliation/{chain}", headers=OPS)
    assert latest.status_code == 200 and latest.json()["id"] == run["report"]["id"]
    return run["report"]


def row(report: dict, wallet: dict, asset: str) -> dict:
    found = [r for r in report["rows"] if r["wallet_id"] == wallet["id"] and r["asset"] == asset]
    assert len(found) == 1, (asset, report["rows"])
    return found[0]


def assert_zero_drift(report: dict) -> None:
    assert report["status"] == "OK", json.dumps(report, indent=2)
    assert report["vanished"] == [] and report["unexplained"] == []
    for r in report["rows"]:
        assert (r["status"], r["drift_base_units"]) == ("OK", "0"), r
        assert r["on_chain"] == r["expected"], r


async def outside_signer(settings: Settings, sessions: SessionFactory, wallet: dict):  # type: ignore[no-untyped-def]
    """Sign with the wallet's key straight from the keystore: custody never hears of it."""
    async with sessions() as session:
        row_ = await session.get(Wallet, wallet["id"])
    assert row_ is not None and row_.key_ref is not None
    signer = SignerSet(settings, sessions).get(row_.signer_backend)
    scheme = ChainRegistry.from_settings(settings).get(row_.chain).key_scheme
    key_ref = row_.key_ref

    async def sign(message: bytes) -> bytes:
        return await signer.sign(key_ref, scheme, message)  # type: ignore[arg-type]

    return sign


async def drift_metric(chain: str, wallet: dict, asset: str) -> float | None:
    return REGISTRY.get_sample_value("custody_reconciliation_drift", {"chain": chain, "wallet_id": wallet["id"], "asset": asset})


async def recorded_events(sessions: SessionFactory, chain: str) -> list[ReconciliationEvent]:
    async with sessions() as session:
        return list((await session.exec(select(ReconciliationEvent).where(ReconciliationEvent.chain == chain))).all())


# ----------------------------------------------------------------------------- EVM


async def test_evm_wallet_reconciles_to_zero_then_an_outside_spend_is_unexplained_drift(api, client, settings, sessions, names, token_address):
    chain_name = names["evm"]
    web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains[chain_name].rpc_url))
    outsider = (await web3.eth.accounts)[1]
    a, b = await wallet_on(api, chain_name), await wallet_on(api, chain_name)
    await fund(api, a, "2")
    await fund(api, a, "50", asset="TUSD")
    # Deposits from outside custody: ETH from another account, TUSD moved by a plain transfer.
    await web3.eth.wait_for_transaction_receipt(await web3.eth.send_transaction({"from": outsider, "to": a["address"], "value": 3 * ETH // 10}))
    token = web3.eth.contract(address=token_address, abi=_ERC20)
    await web3.eth.wait_for_transaction_receipt(await token.functions.mint(outsider, 7 * 10**TOKEN_DECIMALS).transact({"from": outsider}))
    await web3.eth.wait_for_transaction_receipt(await token.functions.transfer(a["address"], 7 * 10**TOKEN_DECIMALS).transact({"from": outsider}))
    paid_out = await withdraw(api, a, random_address(), "0.25", "ETH")
    token_out = await withdraw(api, a, random_address(), "5", "TUSD")
    internal = await withdraw(api, a, b["address"], "0.1", "ETH")

    report = await reconcile(api, chain_name)
    assert_zero_drift(report)
    eth, tusd = row(report, a, "ETH"), row(report, a, "TUSD")
    assert eth["deposits"] == "2.3" and tusd["deposits"] == "57"  # faucet + outside, found on chain
    assert eth["withdrawn"] == "0.35" and tusd["withdrawn"] == "5"
    fees = sum(int(w["fee_paid_base_units"]) for w in (paid_out, token_out, internal))
    assert fees > 0 and eth["fees"] == _decimal(fees, 18)
    assert row(report, b, "ETH")["internal_in"] == "0.1"
    assert report["point"]["block_number"] >= internal["block_number"]
    assert report["summary"]["checks"] == {"NOT_FINAL": 3}
    await _replays_and_is_recorded(client, report["run_key"], "ReconciliationWorkflow__report")

    # A transfer signed with A's key outside custody: listed, and A's ETH drifts by what it took.
    chain = ChainRegistry.from_settings(settings).get(chain_name)
    nonce = await chain.next_sequence(a["address"], None)
    intent = TransferIntent(sender=a["address"], destination=random_address(), asset=chain.asset("ETH"), amount=5 * ETH // 100)
    signed = await chain.sign_transfer(intent, nonce, await outside_signer(settings, sessions, a))
    assert await chain.broadcast(signed) == "accepted"
    receipt = await web3.eth.wait_for_transaction_receipt(signed.tx_hash)
    taken = intent.amount + receipt["gasUsed"] * receipt["effectiveGasPrice"]

    report = await reconcile(api, chain_name)
    assert report["status"] == "MISMATCH"
    assert [(u["kind"], u["tx_hash"], u["sequence"], u["wallet_id"]) for u in report["unexplained"]] == [
        ("TRANSACTION", signed.tx_hash, nonce, a["id"])
    ]
    assert report["unexplained"][0]["moved"] == [{"asset": "ETH", "amount": "0.05"}]
    eth = row(report, a, "ETH")
    assert (eth["status"], eth["drift_base_units"]) == ("DRIFT", str(-taken))
    assert row(report, a, "TUSD")["status"] == "OK" and row(report, b, "ETH")["status"] == "OK"
    assert await drift_metric(chain_name, a, "ETH") == pytest.approx(-taken / ETH)
    kinds = sorted(e.kind for e in await recorded_events(sessions, chain_name))
    assert kinds == ["DRIFT", "UNEXPLAINED"]
    # Unchanged findings are in the next report again, but not recorded as new events.
    again = await reconcile(api, chain_name)
    assert again["status"] == "MISMATCH" and len(await recorded_events(sessions, chain_name)) == 2


async def test_completed_withdrawal_reverted_away_on_anvil_is_reported(client, settings, sessions, names, paused_anvil):
    """On an anvil of its own (the block is taken back with evm_revert, as a reorg looks to a node)."""
    chain_name = names["evm"]
    own = settings.model_copy(
        update={
            "chains": {
                chain_name: EvmChainSettings(
                    chain_id=31337,
                    rpc_url=paused_anvil.info["rpc_url"],
                    finality="depth",
                    confirmations=1,
                    faucet_enabled=True,
                    poll_interval_seconds=0.2,
                    fee_bump_after_seconds=30,
                )
            }
        }
    )
    web3 = AsyncWeb3(AsyncHTTPProvider(paused_anvil.info["rpc_url"]))
    async with build_worker(client, own, sessions), api_client(own, client) as api:
        wallet = await wallet_on(api, chain_name)
        await fund(api, wallet, "1")
        snapshot = (await web3.provider.make_request("evm_snapshot", []))["result"]
        done = await withdraw(api, wallet, random_address(), "0.2", "ETH")
        report = await reconcile(api, chain_name)
        assert_zero_drift(report)
        assert report["summary"]["checks"] == {"NOT_FINAL": 1}

        # The block holding the COMPLETED withdrawal's transaction is gone.
        assert (await web3.provider.make_request("evm_revert", [snapshot]))["result"] is True
        with pytest.raises(TransactionNotFound):
            await web3.eth.get_transaction_receipt(done["tx_hash"])
        report = await reconcile(api, chain_name)
        assert report["status"] == "MISMATCH"
        assert [(v["withdrawal_id"], v["state"]) for v in report["vanished"]] == [(done["id"], "MISSING")]
        assert "no receipt" in report["vanished"][0]["detail"]
        eth = row(report, wallet, "ETH")
        # The database paid 0.2 ETH + fee that the chain no longer shows as paid.
        assert (eth["status"], eth["drift_base_units"]) == ("DRIFT", str(2 * ETH // 10 + int(done["fee_paid_base_units"])))
        assert eth["deposits"] == "1"  # the faucet deposit, re-read after the rewind, counted once
        history = (await api.get(f"/v1/withdrawals/{done['id']}", headers=ALICE)).json()["history"]
        alerts = [h["detail"]["code"] for h in history if h["status"] == "ALERT"]
        assert alerts == ["COMPLETED_TX_MISSING"]
        assert REGISTRY.get_sample_value("custody_reconciliation_vanished_withdrawals", {"chain": chain_name}) == 1
        assert REGISTRY.get_sample_value("custody_withdrawal_alerts_total", {"chain": chain_name, "code": "COMPLETED_TX_MISSING"}) == 1
        assert "VANISHED" in {e.kind for e in await recorded_events(sessions, chain_name)}
        # Reported again while it stays missing, alerted once.
        assert (await reconcile(api, chain_name))["vanished"][0]["withdrawal_id"] == done["id"]
        history = (await api.get(f"/v1/withdrawals/{done['id']}", headers=ALICE)).json()["history"]
        assert [h["status"] for h in history].count("ALERT") == 1


async def test_a_withdrawal_in_flight_explains_its_difference(api, client, settings, sessions, names):
    """The worker dies right after broadcasting: the transfer is on chain, the withdrawal not
    final. The wallet's difference is IN_FLIGHT, not drift."""
    chain_name = names["evm"]
    crash = settings.model_copy(update={"task_queue": f"{settings.task_queue}-crash", "chains": {chain_name: settings.chains[chain_name]}})
    crashing = worker_process(crash, chaos_after="broadcast_transfer")
    withdrawal_id = None
    try:
        async with api_client(crash, client) as crash_api:
            wallet = await wallet_on(crash_api, chain_name)
            await fund(crash_api, wallet, "1")
            response = await crash_api.post(
                "/v1/withdrawals",
                json={"wallet_id": wallet["id"], "to": random_address(), "asset": "ETH", "amount": "0.3"},
                headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
            )
            assert response.status_code == 202, response.text
            withdrawal_id = response.json()["id"]
            assert await wait_exit(crashing, timeout=60) == 137

            report = await reconcile(api, chain_name)
            eth = row(report, wallet, "ETH")
            assert (report["status"], eth["status"], eth["drift"]) == ("OK", "IN_FLIGHT", "0"), eth
            assert eth["expected"] == "1" and Decimal(eth["on_chain"]) < Decimal("0.7")
            assert Decimal(eth["in_flight_out"]) > Decimal("0.3")  # the amount and the most its fee can be
            assert eth["withdrawn"] == "0" and eth["fees"] == "0"
    finally:
        if crashing.poll() is None:
            crashing.terminate()
            crashing.wait(10)
        if withdrawal_id is not None:
            # Its queue has no worker any more: end the run rather than leave it waiting.
            await client.get_workflow_handle(f"withdrawal-{withdrawal_id}").terminate("test over")
        try:
            await client.get_schedule_handle(f"reconcile-{chain_name}").delete()
        except RPCError:
            pass


async def test_worker_start_schedules_reconciliation_per_chain(api, client, settings, names):
    chain_name = names["evm"]
    only = settings.model_copy(
        update={"chains": {chain_name: settings.chains[chain_name]}, "reconciliation": ReconciliationSettings(interval_seconds=3600)}
    )
    schedule_id = f"reconcile-{chain_name}"
    try:
        assert await ensure_reconciliation_schedules(client, only) == [schedule_id]
        assert await ensure_reconciliation_schedules(client, only) == [schedule_id]  # a second worker: same one
        handle = client.get_schedule_handle(schedule_id)
        described = await handle.describe()
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.id, action.task_queue) == ("ReconciliationWorkflow", schedule_id, settings.task_queue)
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert [i.every.total_seconds() for i in described.schedule.spec.intervals] == [3600]
        await handle.trigger()
        response = await _until(lambda: api.get(f"/v1/admin/reconciliation/{chain_name}", headers=OPS), lambda r: r.status_code == 200)
        assert response.json()["run_key"].startswith(f"{schedule_id}-") and response.json()["status"] == "OK"
    finally:
        try:
            await client.get_schedule_handle(schedule_id).delete()
        except RPCError:
            pass


# ----------------------------------------------------------------------------- Solana


async def test_solana_wallet_reconciles_to_zero_then_an_outside_spend_is_unexplained_drift(
    api, settings, sessions, names, rpc, spl_mint_authority, spl_mint
):
    chain_name = names["solana"]
    a, b = await wallet_on(api, chain_name), await wallet_on(api, chain_name)
    owner = Pubkey.from_string(a["address"])
    await fund(api, a, "2")
    # From outside custody: 0.5 SOL from another key; 10 TUSD minted into A's token account.
    outsider = SolanaKeypair()
    await rpc.request_airdrop(outsider.pubkey(), 5 * SOL)
    await _until(lambda: _lamports(rpc, outsider.pubkey()), lambda v: v > 0)
    await send_signed(rpc, outsider, [transfer(TransferParams(from_pubkey=outsider.pubkey(), to_pubkey=owner, lamports=SOL // 2))])
    await _until(lambda: _lamports(rpc, owner), lambda v: v == 2 * SOL + SOL // 2)
    ata = get_associated_token_address(owner, spl_mint, TOKEN_PROGRAM_ID)
    await send_signed(
        rpc,
        spl_mint_authority,
        [
            create_idempotent_associated_token_account(spl_mint_authority.pubkey(), owner, spl_mint, TOKEN_PROGRAM_ID),
            mint_to_checked(
                MintToCheckedParams(
                    program_id=TOKEN_PROGRAM_ID,
                    mint=spl_mint,
                    dest=ata,
                    mint_authority=spl_mint_authority.pubkey(),
                    amount=10 * 10**TOKEN_DECIMALS,
                    decimals=TOKEN_DECIMALS,
                )
            ),
        ],
    )
    await _until(lambda: _lamports(rpc, ata), lambda v: v > 0)
    await withdraw(api, a, str(SolanaKeypair().pubkey()), "0.3", "SOL")
    await withdraw(api, a, str(SolanaKeypair().pubkey()), "2", "TUSD")  # A pays the recipient's token account rent
    await withdraw(api, a, b["address"], "0.1", "SOL")

    report = await reconcile(api, chain_name)
    assert_zero_drift(report)
    sol, tusd = row(report, a, "SOL"), row(report, a, "TUSD")
    assert sol["deposits"] == "2.5" and tusd["deposits"] == "10" and tusd["withdrawn"] == "2"
    rent = (await rpc.get_minimum_balance_for_rent_exemption(165)).value
    assert sol["side_costs"] == _decimal(rent, 9)
    assert row(report, b, "SOL")["internal_in"] == "0.1"

    chain = ChainRegistry.from_settings(settings).get(chain_name)
    intent = TransferIntent(sender=a["address"], destination=str(SolanaKeypair().pubkey()), asset=chain.asset("SOL"), amount=SOL // 20)
    signed = await chain.sign_transfer(intent, None, await outside_signer(settings, sessions, a))
    before = await _lamports(rpc, owner)
    assert await chain.broadcast(signed) == "accepted"
    await _until(lambda: _lamports(rpc, owner), lambda v: v < before)

    report = await reconcile(api, chain_name)
    assert report["status"] == "MISMATCH"
    [spend] = report["unexplained"]
    assert (spend["tx_hash"], spend["wallet_id"], spend["moved"]) == (signed.tx_hash, a["id"], [{"asset": "SOL", "amount": "0.05"}])
    assert spend["fee"] == "0.000005"
    sol = row(report, a, "SOL")
    assert (sol["status"], sol["drift_base_units"]) == ("DRIFT", str(-(SOL // 20 + 5000)))


# ----------------------------------------------------------------------------- Stellar


async def test_stellar_wallet_reconciles_to_zero_then_an_outside_spend_is_unexplained_drift(
    api, client, settings, sessions, names, horizon, stellar_devnet
):
    chain_name = names["stellar"]
    channels = await run_channels(client, settings, chain_name)
    assert channels.ready == 2, channels
    a, b = await wallet_on(api, chain_name), await wallet_on(api, chain_name)
    await fund(api, a, "")  # friendbot: its own fixed amount
    response = await api.post(f"/v1/wallets/{a['id']}/trustlines", json={"asset": "USDX"}, headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex})
    assert response.status_code == 202, response.text
    trustline = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert trustline["status"] == "COMPLETED"
    # From outside custody: 25 XLM from another account, 100 USDX from the issuer.
    outsider = StellarKeypair.random()
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(stellar_devnet.friendbot_url, params={"addr": outsider.public_key})).status_code == 200
    await _pay(horizon, stellar_devnet, outsider, a["address"], Asset.native(), "25")
    await _pay(horizon, stellar_devnet, ISSUER, a["address"], USDX, "100")
    merged = await _merge(horizon, stellar_devnet, outsider, a["address"])  # all the rest of it
    paid = [
        trustline,
        await withdraw(api, a, StellarKeypair.random().public_key, "5", "XLM"),  # create_account
        await withdraw(api, a, b["address"], "10", "XLM"),  # creates B: an internal credit
        await withdraw(api, a, ISSUER.public_key, "7", "USDX"),
    ]

    report = await reconcile(api, chain_name)
    assert_zero_drift(report)
    xlm, usdx = row(report, a, "XLM"), row(report, a, "USDX")
    assert Decimal(xlm["deposits"]) * XLM == 10_025 * XLM + merged and usdx["deposits"] == "100" and usdx["withdrawn"] == "7"
    assert row(report, b, "XLM")["internal_in"] == "10"
    channel_rows = [r for r in report["rows"] if r["owner"] == f"channel:{chain_name}"]
    assert len(channel_rows) == 2 and all(r["deposits"] == "10000" for r in channel_rows)
    # Each transaction's fee is on the row of the account that paid it: the channel that was its
    # source (the wallet only when every channel was busy).
    fees = {r["wallet_id"]: Decimal(r["fees"]) for r in [*channel_rows, xlm]}
    assert sum(fees.values()) * XLM == sum(int(w["fee_paid_base_units"]) for w in paid)
    assert sum(fees[r["wallet_id"]] for r in channel_rows) > 0

    chain = ChainRegistry.from_settings(settings).get(chain_name)
    intent = TransferIntent(sender=a["address"], destination=ISSUER.public_key, asset=chain.asset("XLM"), amount=3 * XLM)
    sequence = await chain.next_sequence(a["address"], None)
    signed = await chain.sign_transfer(intent, sequence, await outside_signer(settings, sessions, a))
    assert await chain.broadcast(signed) == "accepted"

    report = await reconcile(api, chain_name)
    assert report["status"] == "MISMATCH"
    [spend] = report["unexplained"]
    assert (spend["tx_hash"], spend["wallet_id"], spend["sequence"]) == (signed.tx_hash, a["id"], sequence)
    assert spend["moved"] == [{"asset": "XLM", "amount": "3"}]
    fee = int((await horizon.transactions().transaction(signed.tx_hash).call())["fee_charged"])
    xlm = row(report, a, "XLM")
    assert (xlm["status"], xlm["drift_base_units"]) == ("DRIFT", str(-(3 * XLM + fee)))


async def _pay(horizon: ServerAsync, devnet: StellarDevnet, source: StellarKeypair, to: str, asset: Asset, amount: str) -> None:
    account = await horizon.load_account(source.public_key)
    tx = TransactionBuilder(account, devnet.network_passphrase, base_fee=100).append_payment_op(to, asset, amount).set_timeout(60).build()
    tx.sign(source)
    await horizon.submit_transaction(tx)


async def _merge(horizon: ServerAsync, devnet: StellarDevnet, source: StellarKeypair, into: str) -> int:
    """account_merge `source` into `into`; returns the stroops it moved (its balance less the fee)."""
    account = await horizon.load_account(source.public_key)
    before = int(
        Decimal(
            next(b["balance"] for b in (await horizon.accounts().account_id(source.public_key).call())["balances"] if b["asset_type"] == "native")
        )
        * XLM
    )
    tx = TransactionBuilder(account, devnet.network_passphrase, base_fee=100).append_account_merge_op(into).set_timeout(60).build()
    tx.sign(source)
    result = await horizon.submit_transaction(tx)
    return before - int(result["fee_charged"])


# ----------------------------------------------------------------------------- CLI


# `api_url` is conftest's: the API under uvicorn, with a worker on the test's task queue behind it.


async def custody(api_url: str, *args: str, key: str) -> tuple[int, str, str]:
    env = {**os.environ, "CUSTODY_API_URL": api_url, "CUSTODY_API_KEY": key}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_cli_reconcile_prints_the_table(api_url, names):
    chain_name = names["evm"]
    async with httpx.AsyncClient(base_url=api_url, timeout=60) as http:
        wallet = await wallet_on(http, chain_name)
        await fund(http, wallet, "1")
        await withdraw(http, wallet, random_address(), "0.4", "ETH")

    code, out, err = await custody(api_url, "reconcile", "--chain", chain_name, key="dev-ops-key")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"reconciliation of {chain_name} at block ") and lines[0].endswith(": OK")
    header = next(line for line in lines if line.startswith("WALLET"))
    assert header.split() == [
        "WALLET",
        "LABEL",
        "ADDRESS",
        "ASSET",
        "ON_CHAIN",
        "DEPOSITS",
        "INTERNAL_IN",
        "WITHDRAWN",
        "FEES",
        "SIDE_COSTS",
        "IN_FLIGHT_OUT",
        "EXPECTED",
        "DRIFT",
        "STATUS",
    ]
    [eth] = [line.split() for line in lines if line.startswith(wallet["id"][:8])]
    assert (eth[1], eth[3], eth[5], eth[7], eth[-2], eth[-1]) == (wallet["label"], "ETH", "1", "0.4", "0", "OK")
    assert "COMPLETED withdrawals re-verified: NOT_FINAL 1; vanished: 0" in out
    assert "unexplained spends from custody keys: 0" in out

    code, _, err = await custody(api_url, "reconcile", "--chain", chain_name, key="dev-alice-key")
    assert code == 1 and "FORBIDDEN" in err
    code, _, err = await custody(api_url, "reconcile", "--chain", "nochain", key="dev-ops-key")
    assert code == 1 and "UNKNOWN_CHAIN" in err


# ----------------------------------------------------------------------------- helpers


async def _replays_and_is_recorded(client: Client, workflow_id: str, name: str) -> None:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(workflows=list(WORKFLOWS), data_converter=custody_data_converter(Settings())).replay_workflow(history)
    if os.environ.get("CUSTODY_RECORD_HISTORIES") == "1" and not (HISTORIES / f"{name}.json").exists():
        (HISTORIES / f"{name}.json").write_text(history.to_json())


def _decimal(units: int, decimals: int) -> str:
    from core.money import to_decimal_string

    return to_decimal_string(units, decimals)


_ERC20: list[dict[str, Any]] = [
    {
        "name": name,
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": outputs,
    }
    for name, outputs in (("mint", []), ("transfer", [{"name": "", "type": "bool"}]))
]
