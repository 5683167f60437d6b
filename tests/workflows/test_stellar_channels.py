"""Stellar channel accounts end to end: ChannelAccountsWorkflow creates and funds the channel set;
withdrawals from one wallet lease distinct channels as transaction source and land side by side.

The devnet, like stellar-core, admits one transaction per source account at a time (a second
gets TRY_AGAIN_LATER): without channels, concurrent payments from one wallet collide; with them,
none does. Each test uses its own chain name, so its channel set is its own.
"""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlmodel import col, select
from stellar_sdk import Account, Keypair, TransactionBuilder, TransactionEnvelope
from temporalio.client import Client
from temporalio.worker import Replayer

from chains.base import SignedTransfer
from core.settings import ChannelSettings, Settings, StellarChainSettings
from core.temporal import custody_data_converter
from db.engine import SessionFactory
from devnet.stellar import StellarDevnet, run_stellar_devnet
from models.audit import AuditEntry
from models.channels import ChannelAccount, ChannelState, channel_owner
from models.db import SequenceClaim, Wallet
from models.payloads import ChannelSetResult
from tests.conftest import ALICE, HISTORIES, api_client, wait_for_status
from tests.support.stellar import XLM, balance, run_channels, sequence
from worker import WORKFLOWS, build_worker


@pytest.fixture(scope="module")
def devnet(stellar_devnet: StellarDevnet) -> StellarDevnet:
    """This module's devnet is conftest's Stellar one (its `horizon` too)."""
    return stellar_devnet


@pytest.fixture
def chain() -> str:
    return f"xlm{uuid.uuid4().hex[:8]}"


def with_channels(base_settings: Settings, task_queue: str, chain: str, devnet: StellarDevnet, channels: ChannelSettings) -> Settings:
    stellar = StellarChainSettings(
        horizon_url=devnet.url,
        network_passphrase=devnet.network_passphrase,
        friendbot_url=devnet.friendbot_url,
        faucet_enabled=True,
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=2,
        channels=channels,
    )
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, chain: stellar}})


@pytest.fixture
def settings(base_settings, task_queue, chain, devnet):  # type: ignore[no-untyped-def]
    return with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=4))


@pytest.fixture
async def api(client: Client, settings: Settings, sessions: SessionFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with build_worker(client, settings, sessions):
        async with api_client(settings, client) as http:
            yield http


async def channel_rows(sessions: SessionFactory, chain: str) -> list[tuple[ChannelAccount, Wallet]]:
    async with sessions() as session:
        rows = await session.exec(
            select(ChannelAccount, Wallet)
            .join(Wallet, col(Wallet.id) == col(ChannelAccount.wallet_id))
            .where(ChannelAccount.chain == chain)
            .order_by(col(ChannelAccount.position))
        )
        return list(rows.all())


async def funded_wallet(api: httpx.AsyncClient, chain: str) -> dict:
    response = await api.post("/v1/wallets", json={"chain": chain, "label": f"hot-{uuid.uuid4().hex[:6]}"}, headers=ALICE)
    assert response.status_code == 201, response.text
    wallet = response.json()
    funded = await api.post(f"/v1/wallets/{wallet['id']}/fund", json={}, headers=ALICE)
    assert funded.status_code == 200, funded.text
    return wallet


async def start_withdrawal(api: httpx.AsyncClient, wallet: dict, to: str, amount: str) -> str:
    response = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": wallet["id"], "to": to, "asset": "XLM", "amount": amount},
        headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def rejections(devnet: StellarDevnet) -> dict[str, int]:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(f"{devnet.url}/_devnet/status")).json()["rejections"]


async def test_channel_set_is_created_funded_and_kept(client, settings, sessions, chain, horizon):  # type: ignore[no-untyped-def]
    async with build_worker(client, settings, sessions):
        result = await run_channels(client, settings, chain)
        assert (result.ready, result.pending, result.failed) == (4, 0, 0), result
        rows = await channel_rows(sessions, chain)
        assert [r.position for r, _ in rows] == [0, 1, 2, 3]
        assert {w.owner for _, w in rows} == {channel_owner(chain)} and all(r.state == ChannelState.READY for r, _ in rows)
        for _, wallet in rows:
            assert await balance(horizon, wallet.address) is not None  # the account exists on chain

        again = await run_channels(client, settings, chain)
        assert again.ready == 4
        assert [w.id for _, w in await channel_rows(sessions, chain)] == [w.id for _, w in rows]  # nothing made twice


async def test_operators_read_and_sync_the_channel_set(api, client, settings, chain):  # type: ignore[no-untyped-def]
    ops = {"Authorization": "Bearer dev-ops-key"}
    assert (await api.get(f"/v1/channels/{chain}", headers=ALICE)).status_code == 403
    not_stellar = await api.get("/v1/channels/anvil", headers=ops)
    assert not_stellar.status_code == 404 and not_stellar.json()["error"]["code"] == "NOT_AVAILABLE", not_stellar.text
    empty = (await api.get(f"/v1/channels/{chain}", headers=ops)).json()
    assert (empty["configured"], empty["channels"]) == (4, [])

    started = await api.post(f"/v1/channels/{chain}/sync", headers=ops)
    assert started.status_code == 202 and started.json()["mode"] == "started", started.text  # no schedule here
    result = await client.get_workflow_handle(started.json()["workflow_id"], result_type=ChannelSetResult).result()
    assert result.ready == 4
    body = (await api.get(f"/v1/channels/{chain}", headers=ops)).json()
    assert body["sizes"] == {"READY": 4} and [c["position"] for c in body["channels"]] == [0, 1, 2, 3]
    assert all(c["address"].startswith("G") and c["leased_by"] is None for c in body["channels"])


async def test_parallel_payments_from_one_wallet_take_distinct_channels(api, client, settings, sessions, chain, horizon, devnet):  # type: ignore[no-untyped-def]
    assert (await run_channels(client, settings, chain)).ready == 4
    channels = {w.address for _, w in await channel_rows(sessions, chain)}
    wallet = await funded_wallet(api, chain)
    wallet_sequence = await sequence(horizon, wallet["address"])
    wallet_before = await balance(horizon, wallet["address"])
    before = await rejections(devnet)
    destinations = [Keypair.random().public_key for _ in range(4)]

    ids = await asyncio.gather(*(start_withdrawal(api, wallet, d, "2") for d in destinations))
    finals = await asyncio.gather(*(wait_for_status(api, i, {"COMPLETED", "FAILED"}, timeout=45) for i in ids))

    assert [f["status"] for f in finals] == ["COMPLETED"] * 4, finals
    assert all(len(f["attempts"]) == 1 for f in finals)
    assert sorted(f["attempts"][0]["source"] for f in finals) == sorted(channels)
    sources = []
    for final, destination in zip(finals, destinations, strict=True):
        tx = await horizon.transactions().transaction(final["tx_hash"]).call()
        assert tx["successful"]
        sources.append(tx["source_account"])
        assert await balance(horizon, destination) == 2 * XLM
    assert len(set(sources)) == 4 and set(sources) <= channels  # four channels, one each
    # The wallet only paid: its sequence number never moved and the channels paid the fees.
    assert await sequence(horizon, wallet["address"]) == wallet_sequence
    assert await balance(horizon, wallet["address"]) == wallet_before - 8 * XLM
    after = await rejections(devnet)
    for code in ("TRY_AGAIN_LATER", "tx_bad_seq"):
        assert after.get(code, 0) == before.get(code, 0), (code, before, after)
    # Every lease was handed back when its withdrawal finished.
    assert all(r.leased_by is None for r, _ in await channel_rows(sessions, chain))
    async with sessions() as session:
        claims = (await session.exec(select(SequenceClaim).where(col(SequenceClaim.withdrawal_id).in_(ids)))).all()
    assert sorted(c.sender for c in claims) == sorted(sources)


async def test_more_withdrawals_than_channels_wait_for_a_channel(client, base_settings, task_queue, sessions, chain, devnet, horizon):  # type: ignore[no-untyped-def]
    """Issue 14: with every channel leased, a withdrawal waits for a free one (its signing step
    is retried) instead of making the wallet its own transaction source, which the queue admits
    once per ledger (TRY_AGAIN_LATER for the rest). Judged by the network's view of the
    transactions, not by timings: every one has a channel as source, the wallet's sequence
    number never moved, and no submission was answered TRY_AGAIN_LATER."""
    settings = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=2))
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        assert (await run_channels(client, settings, chain)).ready == 2
        channels = {w.address for _, w in await channel_rows(sessions, chain)}
        wallet = await funded_wallet(api, chain)
        wallet_sequence = await sequence(horizon, wallet["address"])
        wallet_before = await balance(horizon, wallet["address"])
        before = await rejections(devnet)
        destinations = [Keypair.random().public_key for _ in range(8)]

        ids = await asyncio.gather(*(start_withdrawal(api, wallet, d, "2") for d in destinations))
        finals = await asyncio.gather(*(wait_for_status(api, i, {"COMPLETED", "FAILED"}, timeout=90) for i in ids))

    assert [f["status"] for f in finals] == ["COMPLETED"] * 8, finals
    for final, destination in zip(finals, destinations, strict=True):
        assert [a["source"] for a in final["attempts"]] == [final["attempts"][0]["source"]] and final["attempts"][0]["source"] in channels
        tx = await horizon.transactions().transaction(final["tx_hash"]).call()
        assert tx["successful"] and tx["source_account"] in channels, tx
        assert await balance(horizon, destination) == 2 * XLM  # paid exactly once
    # No transaction had the wallet as source: its sequence number never moved; it paid 8 x 2 XLM.
    assert await sequence(horizon, wallet["address"]) == wallet_sequence
    assert await balance(horizon, wallet["address"]) == wallet_before - 8 * 2 * XLM
    payments = await horizon.payments().for_account(wallet["address"]).limit(200).call()
    # New accounts: each got one create_account from the wallet, and nothing else did.
    sent = [p for p in payments["_embedded"]["records"] if wallet["address"] in (p.get("from"), p.get("funder"))]
    assert sorted(p.get("to") or p.get("account") for p in sent) == sorted(destinations), sent
    after = await rejections(devnet)
    for code in ("TRY_AGAIN_LATER", "tx_bad_seq"):
        assert after.get(code, 0) == before.get(code, 0), (code, before, after)
    assert all(r.leased_by is None for r, _ in await channel_rows(sessions, chain))  # every lease handed back


async def test_without_channels_the_wallet_lands_one_payment_per_ledger(client, base_settings, task_queue, sessions, chain, devnet, horizon):  # type: ignore[no-untyped-def]
    """The contrast: same payments, no channels. Each is the wallet's own transaction, and the
    queue admits one per source account, so they land in as many ledgers (a payment that arrived
    while another was open was answered TRY_AGAIN_LATER and re-sent: see the devnet's tests)."""
    settings = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=0))
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await funded_wallet(api, chain)
        ids = await asyncio.gather(*(start_withdrawal(api, wallet, Keypair.random().public_key, "2") for _ in range(3)))
        finals = await asyncio.gather(*(wait_for_status(api, i, {"COMPLETED", "FAILED"}, timeout=60) for i in ids))
    assert [f["status"] for f in finals] == ["COMPLETED"] * 3, finals
    ledgers = set()
    for final in finals:
        assert final["attempts"][0]["source"] is None
        tx = await horizon.transactions().transaction(final["tx_hash"]).call()
        assert tx["source_account"] == wallet["address"]
        ledgers.add(tx["ledger"])
    assert len(ledgers) == 3


async def test_underfunded_channels_are_set_aside_and_the_wallet_signs_alone(client, base_settings, task_queue, sessions, chain, devnet, horizon):  # type: ignore[no-untyped-def]
    settings = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=1))
    async with build_worker(client, settings, sessions):
        assert (await run_channels(client, settings, chain)).ready == 1
    # Friendbot gave the channel 10,000 XLM: ask for more than that to be "enough".
    demanding = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=1, min_balance="20000"))
    async with build_worker(client, demanding, sessions), api_client(demanding, client) as api:
        wallet = await funded_wallet(api, chain)
        done = await wait_for_status(api, await start_withdrawal(api, wallet, Keypair.random().public_key, "3"), {"COMPLETED", "FAILED"}, timeout=45)
        assert done["status"] == "COMPLETED", done
        tx = await horizon.transactions().transaction(done["tx_hash"]).call()
        assert tx["source_account"] == wallet["address"]
        [(row, _)] = await channel_rows(sessions, chain)
        assert row.state == ChannelState.UNDERFUNDED and row.leased_by is None
        result = await run_channels(client, demanding, chain)
        assert result.underfunded == 1 and result.notes, result  # no funding wallet: the note says what to do


async def test_a_run_sets_aside_channels_below_the_minimum(client, base_settings, task_queue, sessions, chain, devnet):  # type: ignore[no-untyped-def]
    settings = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=2))
    demanding = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=2, min_balance="20000"))
    async with build_worker(client, settings, sessions):
        assert (await run_channels(client, settings, chain)).ready == 2
    async with build_worker(client, demanding, sessions):
        result = await run_channels(client, demanding, chain)
    assert (result.ready, result.underfunded) == (0, 2), result
    assert result.notes  # friendbot cannot top up an existing account: the note says what can
    async with build_worker(client, settings, sessions):
        assert (await run_channels(client, settings, chain)).ready == 2  # funded enough again by today's rule


async def test_channels_funded_by_a_custody_wallet(client, base_settings, task_queue, sessions, chain, devnet, horizon):  # type: ignore[no-untyped-def]
    """On a network without friendbot, the funding wallet creates each channel with create_account
    (child withdrawal workflows: exactly once); the recorded history replays."""
    plain = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=0))
    async with build_worker(client, plain, sessions), api_client(plain, client) as api:
        funder = await funded_wallet(api, chain)
    settings = with_channels(
        base_settings,
        task_queue,
        chain,
        devnet,
        ChannelSettings(count=2, starting_balance="5", funding_wallet_id=funder["id"]),
    )
    funder_before = await balance(horizon, funder["address"])
    workflow_id = f"channels-{chain}-funded"
    async with build_worker(client, settings, sessions):
        result = await run_channels(client, settings, chain, workflow_id=workflow_id)
        assert result.ready == 2, result
        again = await run_channels(client, settings, chain)
        assert again.ready == 2
    rows = await channel_rows(sessions, chain)
    for row, wallet in rows:
        assert await balance(horizon, wallet.address) == 5 * XLM  # created with exactly the starting balance
        assert row.funding_withdrawal_id is not None
    assert await balance(horizon, funder["address"]) == funder_before - 2 * 5 * XLM - 2 * 100  # once each, plus fees
    async with sessions() as session:  # each funding is in the audit log once
        funded = (await session.exec(select(AuditEntry).where(AuditEntry.action == "channel.funding_requested"))).all()
    mine = sorted(e.object_id for e in funded if e.details.get("from_wallet") == funder["id"])
    assert mine == sorted(row.funding_withdrawal_id for row, _ in rows), mine
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    await Replayer(workflows=list(WORKFLOWS), data_converter=custody_data_converter(Settings())).replay_workflow(history)
    name = "ChannelAccountsWorkflow__funded_by_wallet"
    if os.environ.get("CUSTODY_RECORD_HISTORIES") == "1" and not (HISTORIES / f"{name}.json").exists():
        (HISTORIES / f"{name}.json").write_text(history.to_json())


async def test_expired_channel_attempt_is_resigned_on_the_channel_and_lands_once(api, client, settings, sessions, chain, horizon, devnet):  # type: ignore[no-untyped-def]
    assert (await run_channels(client, settings, chain)).ready == 4
    wallet = await funded_wallet(api, chain)
    destination = Keypair.random().public_key
    async with httpx.AsyncClient(base_url=devnet.url, timeout=30) as http:
        await http.post("/_devnet/fail_next_submissions", json={"count": 2, "status": 504, "apply": False})
        withdrawal_id = await start_withdrawal(api, wallet, destination, "4")
        signed = await wait_for_status(api, withdrawal_id, {"BROADCASTING", "CONFIRMING", "COMPLETED", "FAILED"})
        assert len(signed["attempts"]) == 1
        await http.post("/_devnet/advance_time", json={"seconds": 400})
        await http.post("/_devnet/close_ledgers", json={"count": 1})
    done = await wait_for_status(api, withdrawal_id, {"COMPLETED", "FAILED"}, timeout=45)
    assert done["status"] == "COMPLETED", done
    first, second = done["attempts"]
    assert first["nonce"] == second["nonce"]  # the channel's dead slot, re-signed with new timebounds
    tx = await horizon.transactions().transaction(done["tx_hash"]).call()
    assert tx["source_account"] != wallet["address"]
    assert tx["source_account"] in {w.address for _, w in await channel_rows(sessions, chain)}
    assert await balance(horizon, destination) == 4 * XLM


async def test_worker_start_schedules_the_channel_set_and_runs_it_at_once(client, settings, sessions, chain):  # type: ignore[no-untyped-def]
    from worker import ensure_channel_schedules

    async with build_worker(client, settings, sessions):
        ids = await ensure_channel_schedules(client, settings)
        assert f"channels-{chain}" in ids
        assert f"channels-{chain}" in await ensure_channel_schedules(client, settings)  # a second worker: same schedule
        for _ in range(150):
            rows = await channel_rows(sessions, chain)
            if len(rows) == 4 and all(r.state == ChannelState.READY for r, _ in rows):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"channel set not ready: {[r.state for r, _ in rows]}")
        schedule = await client.get_schedule_handle(f"channels-{chain}").describe()
        assert schedule.info.num_actions >= 1
        await client.get_schedule_handle(f"channels-{chain}").delete()


async def test_only_a_first_attempt_takes_a_channel(client, base_settings, task_queue, sessions, chain, devnet, horizon):  # type: ignore[no-untyped-def]
    """Signed with the wallet as source while no channel was usable (none READY), a withdrawal
    keeps that source when it is re-signed after expiry, even if a channel is READY by then."""
    import sqlalchemy as sa

    settings = with_channels(base_settings, task_queue, chain, devnet, ChannelSettings(count=1))
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        assert (await run_channels(client, settings, chain)).ready == 1
        [(row, _)] = await channel_rows(sessions, chain)
        async with sessions() as session, session.begin():  # set aside: no channel is usable
            await session.exec(sa.update(ChannelAccount).where(col(ChannelAccount.wallet_id) == row.wallet_id).values(state=ChannelState.UNDERFUNDED))
        wallet = await funded_wallet(api, chain)
        async with httpx.AsyncClient(base_url=devnet.url, timeout=30) as http:
            await http.post("/_devnet/fail_next_submissions", json={"count": 2, "status": 504, "apply": False})
            withdrawal_id = await start_withdrawal(api, wallet, Keypair.random().public_key, "4")
            signed = await wait_for_status(api, withdrawal_id, {"BROADCASTING", "CONFIRMING", "COMPLETED", "FAILED"})
            assert [a["source"] for a in signed["attempts"]] == [None]
            async with sessions() as session, session.begin():  # the channel is READY again
                await session.exec(sa.update(ChannelAccount).where(col(ChannelAccount.wallet_id) == row.wallet_id).values(state=ChannelState.READY))
            await http.post("/_devnet/advance_time", json={"seconds": 400})
            await http.post("/_devnet/close_ledgers", json={"count": 1})
        done = await wait_for_status(api, withdrawal_id, {"COMPLETED", "FAILED"}, timeout=45)
    assert done["status"] == "COMPLETED" and [a["source"] for a in done["attempts"]] == [None, None], done
    [(after, _)] = await channel_rows(sessions, chain)
    assert after.lease_count == row.lease_count and after.leased_by is None


async def test_try_again_later_is_answered_at_once_as_a_transient_error(devnet):  # type: ignore[no-untyped-def]
    """Issue 14: Horizon's synchronous submit holds a transaction stellar-core answered
    TRY_AGAIN_LATER until its own timeout (30 s) and then says 504, which tells nothing. The
    adapter asks the async endpoint first, so the queue's refusal comes back as what it is: a
    transient error about the transaction (no endpoint is blamed), the same bytes landing later."""
    from chains.health import is_connectivity_failure
    from chains.stellar import StellarChain
    from core.errors import ChainUnavailable

    # Ledgers close on demand only: the first transaction stays in the open ledger meanwhile, and
    # a synchronous submit answers its timeout at once instead of after `submission_timeout`.
    async with run_stellar_devnet(port=0, close_interval_ms=0) as manual, httpx.AsyncClient(base_url=manual.url, timeout=30) as http:
        settings = StellarChainSettings(horizon_url=manual.url, network_passphrase=manual.network_passphrase, friendbot_url=manual.friendbot_url)
        adapter = StellarChain("manual", settings)
        source = Keypair.random()
        assert (await http.get(manual.friendbot_url, params={"addr": source.public_key})).status_code == 200
        start = int((await http.get(f"/accounts/{source.public_key}")).json()["sequence"])

        def envelope(sequence: int) -> TransactionEnvelope:
            account = Account(source.public_key, sequence - 1)
            builder = TransactionBuilder(account, manual.network_passphrase, base_fee=100).set_timeout(3600)
            tx = builder.append_create_account_op(Keypair.random().public_key, "2").build()
            tx.sign(source)
            return tx

        first, second = envelope(start + 1), envelope(start + 2)
        queued = await http.post("/transactions_async", data={"tx": first.to_xdr()})
        assert queued.status_code == 201, queued.text  # in the open ledger: the account's one slot
        signed = SignedTransfer(tx_hash=second.hash_hex(), raw_tx=base64.b64decode(second.to_xdr()).hex(), sequence=start + 2, max_fee=100)
        try:
            with pytest.raises(ChainUnavailable) as refused:
                await adapter.broadcast(signed)
            assert "TRY_AGAIN_LATER" in refused.value.message, refused.value.message
            assert not is_connectivity_failure(refused.value)  # the node answered about the transaction
            await http.post("/_devnet/close_ledgers", json={"count": 1})
            assert await adapter.broadcast(signed) == "accepted"  # the same bytes, once the slot is free
            assert await adapter.is_known(second.hash_hex())
        finally:
            await adapter.close()
        status = (await http.get("/_devnet/status")).json()
        assert status["rejections"].get("TRY_AGAIN_LATER") == 1, status
