"""A worker killed after the signed attempt is committed but before Temporal hears of it (so
before any broadcast) and then restarted produces exactly one on-chain transfer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from sqlmodel import select
from web3 import AsyncHTTPProvider, AsyncWeb3

from devnet.local import ROOT
from models.db import TransferAttempt
from tests.conftest import ALICE, api_client, create_wallet, fund, random_address, wait_for_status, withdraw


def _worker_process(settings, chaos_after: str | None) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "CUSTODY_ENVIRONMENT": "test",
        "CUSTODY_DATABASE_URL": settings.database_url,
        "CUSTODY_REDIS_URL": settings.redis_url,
        "CUSTODY_TEMPORAL_ADDRESS": settings.temporal_address,
        "CUSTODY_TASK_QUEUE": settings.task_queue,
        "CUSTODY_WORKER_METRICS_PORT": "0",
        "CUSTODY_CHAINS": json.dumps({name: c.model_dump() for name, c in settings.chains.items()}),
    }
    env.pop("CUSTODY_CHAOS_EXIT_AFTER_ACTIVITY", None)
    if chaos_after:
        env["CUSTODY_CHAOS_EXIT_AFTER_ACTIVITY"] = chaos_after
    return subprocess.Popen([sys.executable, "worker.py"], cwd=ROOT, env=env)


async def _wait_exit(process: subprocess.Popen, timeout: float) -> int:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the chaos worker did not exit")
        await asyncio.sleep(0.2)
    return process.returncode


async def test_worker_killed_between_persist_and_broadcast_sends_exactly_once(settings, client, sessions):
    crashing = _worker_process(settings, chaos_after="sign_transfer")
    restarted = None
    try:
        async with api_client(settings, client) as api:
            wallet = await create_wallet(api)
            await fund(api, wallet, "1")
            destination = random_address()
            accepted = (await withdraw(api, wallet, destination, "0.3")).json()

            assert await _wait_exit(crashing, timeout=60) == 137
            async with sessions() as session:
                attempts = (
                    await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == accepted["id"]))
                ).all()
            assert len(attempts) == 1 and attempts[0].broadcast_at is None
            persisted_hash = attempts[0].tx_hash
            web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
            assert await web3.eth.get_transaction_count(wallet["address"]) == 0  # nothing sent yet

            restarted = _worker_process(settings, chaos_after=None)
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
