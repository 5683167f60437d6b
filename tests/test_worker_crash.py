"""A worker killed after the signed attempt is committed but before Temporal hears of it (so
before any broadcast) and then restarted produces exactly one on-chain transfer."""

from __future__ import annotations


from sqlmodel import select
from web3 import AsyncHTTPProvider, AsyncWeb3

from models.db import TransferAttempt
from tests.conftest import (
    ALICE,
    api_client,
    create_wallet,
    fund,
    random_address,
    wait_exit,
    wait_for_status,
    withdraw,
    worker_process,
)


async def test_worker_killed_between_persist_and_broadcast_sends_exactly_once(settings, client, sessions):
    crashing = worker_process(settings, chaos_after="sign_transfer")
    restarted = None
    try:
        async with api_client(settings, client) as api:
            wallet = await create_wallet(api)
            await fund(api, wallet, "1")
            destination = random_address()
            accepted = (await withdraw(api, wallet, destination, "0.3")).json()

            assert await wait_exit(crashing, timeout=60) == 137
            async with sessions() as session:
                attempts = (
                    await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == accepted["id"]))
                ).all()
            assert len(attempts) == 1 and attempts[0].broadcast_at is None
            persisted_hash = attempts[0].tx_hash
            web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
            assert await web3.eth.get_transaction_count(wallet["address"]) == 0  # nothing sent yet

            restarted = worker_process(settings, chaos_after=None)
            done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"}, timeout=120)
            assert done["status"] == "COMPLETED", done
            assert done["tx_hash"] == persisted_hash
            assert [a["tx_hash"] for a in done["attempts"]] == [persisted_hash]
            assert await web3.eth.get_transaction_count(wallet["address"]) == 1
            assert await web3.eth.get_balance(destination) == 3 * 10**17
            history = (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()["history"]
            assert [e["status"] for e in history].count("SIGNING") == 1
    finally:
        for process in (crashing, restarted):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)
