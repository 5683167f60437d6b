"""A worker killed after the signed attempt is committed but before Temporal hears of it (so
before any broadcast) and then restarted produces exactly one on-chain transfer, as does one
killed right after a local step (reserve, finish) committed; a worker stopped with SIGTERM lets
the activity in flight finish first, and does not wait on a local step that keeps failing."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from web3 import AsyncHTTPProvider, AsyncWeb3

from core.settings import AwsKmsSettings, Settings
from devnet.faultproxy import FaultProxy
from models.db import Reservation, TransferAttempt
from models.payloads import WithdrawalResult, WithdrawalStatus
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


async def _withdraw_until_the_crash(api: httpx.AsyncClient, crashing: subprocess.Popen, amount: str) -> tuple[dict, str, dict]:  # type: ignore[type-arg]
    """A funded wallet's withdrawal of `amount` to a fresh address, returned once the chaos hook
    has killed the worker (exit 137): (wallet, destination, accepted withdrawal)."""
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    destination = random_address()
    accepted = (await withdraw(api, wallet, destination, amount)).json()
    assert await wait_exit(crashing, timeout=60) == 137
    return wallet, destination, accepted


class _CrashAndRestart:
    """A worker the chaos hook kills right after `step`, and the plain worker started in its
    place by `restart()`; both stopped when the test ends."""

    def __init__(self, settings: Settings, step: str) -> None:
        self.settings = settings
        self.crashing = worker_process(settings, chaos_after=step)
        self.processes = [self.crashing]

    def restart(self) -> None:
        self.processes.append(worker_process(self.settings))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                process.wait(10)


@contextmanager
def _worker_killed_after(settings: Settings, step: str) -> Iterator[_CrashAndRestart]:
    workers = _CrashAndRestart(settings, step)
    try:
        yield workers
    finally:
        workers.stop()


async def test_worker_killed_between_persist_and_broadcast_sends_exactly_once(settings, client, sessions):
    with _worker_killed_after(settings, "sign_transfer") as workers:
        async with api_client(settings, client) as api:
            wallet, destination, accepted = await _withdraw_until_the_crash(api, workers.crashing, "0.3")
            async with sessions() as session:
                attempts = (await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == accepted["id"]))).all()
            assert len(attempts) == 1 and attempts[0].broadcast_at is None
            persisted_hash = attempts[0].tx_hash
            web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
            assert await web3.eth.get_transaction_count(wallet["address"]) == 0  # nothing sent yet

            workers.restart()
            done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"}, timeout=120)
            assert done["status"] == "COMPLETED", done
            assert done["tx_hash"] == persisted_hash
            assert [a["tx_hash"] for a in done["attempts"]] == [persisted_hash]
            assert await web3.eth.get_transaction_count(wallet["address"]) == 1
            assert await web3.eth.get_balance(destination) == 3 * 10**17
            history = (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()["history"]
            assert [e["status"] for e in history].count("SIGNING") == 1


async def test_a_cancel_made_after_the_send_of_a_try_that_died_never_reports_cancelled_for_money_that_moved(settings, client, sessions):
    """The worker dies right after sign-and-broadcast sent the transfer (before Temporal heard of
    it); the owner cancels meanwhile. The retried step must not read the cancellation as "stop
    before the send": the bytes are already out (anvil mined them), so the withdrawal completes
    and the cancellation is answered by the chain (too late), never CANCELLED with the money gone."""
    with _worker_killed_after(settings, "broadcast_transfer") as workers:
        async with api_client(settings, client) as api:
            wallet, destination, accepted = await _withdraw_until_the_crash(api, workers.crashing, "0.25")
            web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
            assert await web3.eth.get_balance(destination) == 25 * 10**16  # sent and mined before the worker died
            # Recorded at once; delivered to the workflow once a worker runs it again.
            cancelling = asyncio.create_task(api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={"reason": "too late"}, headers=ALICE))
            await asyncio.sleep(1)
            workers.restart()
            done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"}, timeout=120)
            await cancelling
            assert done["status"] == "COMPLETED", done
            # The transfer that went out before the crash is the one that landed (a cancelling
            # replacement the workflow may have signed after the send could not: its nonce was used).
            assert done["tx_hash"] == done["attempts"][0]["tx_hash"]
            assert await web3.eth.get_transaction_count(wallet["address"]) == 1
            async with sessions() as session:
                held = await session.get(Reservation, accepted["id"])
            assert held is not None and held.state == "SETTLED"


@pytest.mark.parametrize("step", ["reserve_funds", "finish_withdrawal"])
async def test_worker_killed_right_after_a_local_step_committed_pays_once(step, settings, client, sessions):
    """reserve and finish run as local activities inside a workflow task: a worker that dies right
    after one committed takes that task with it, the next worker runs the step again, finds its
    own work done (the hold, the final status) and the withdrawal completes, once."""
    with _worker_killed_after(settings, step) as workers:
        async with api_client(settings, client) as api:
            wallet, destination, accepted = await _withdraw_until_the_crash(api, workers.crashing, "0.2")
            async with sessions() as session:
                held = await session.get(Reservation, accepted["id"])
            assert held is not None and held.state == ("SETTLED" if step == "finish_withdrawal" else "HELD")

            workers.restart()
            result = await client.get_workflow_handle(f"withdrawal-{accepted['id']}", result_type=WithdrawalResult).result()
            assert result.status == WithdrawalStatus.COMPLETED, result
            done = (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()
            assert [e["status"] for e in done["history"]] == ["PENDING", "VALIDATING", "SIGNING", "BROADCASTING", "CONFIRMING", "COMPLETED"]
            web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
            assert await web3.eth.get_transaction_count(wallet["address"]) == 1
            assert await web3.eth.get_balance(destination) == 2 * 10**17
            async with sessions() as session:
                held = await session.get(Reservation, accepted["id"])
            assert held is not None and held.state == "SETTLED"


async def test_a_local_step_failing_on_the_chain_carries_on_as_an_activity_and_sigterm_stops_at_once(settings, client, sessions):
    """reserve runs locally; with the node answering 503 it fails once, then carries on as a
    server activity (retried by the server, shown as pending in the Web UI) instead of retrying
    inside the workflow task. So a SIGTERM stops the worker at once (core would keep local
    retries going through the shutdown: about 30 s), and the next worker completes it, once."""
    with FaultProxy(settings.chains["anvil"].rpc_url) as proxy:
        chains = {**settings.chains, "anvil": settings.chains["anvil"].model_copy(update={"rpc_url": proxy.url})}
        proxied = settings.model_copy(update={"chains": chains})
        stopping = worker_process(proxied)
        restarted = None
        try:
            async with api_client(proxied, client) as api:
                wallet = await create_wallet(api)
                await fund(api, wallet, "1")
                proxy.add(action="error", status=503)  # the node is down from here on
                destination = random_address()
                accepted = (await withdraw(api, wallet, destination, "0.2")).json()
                for _ in range(600):  # reserve's first attempt, local, meets the 503
                    if proxy.injected("error"):
                        break
                    await asyncio.sleep(0.01)
                stopping.send_signal(signal.SIGTERM)
                assert await wait_exit(stopping, timeout=15) == 0  # grace 1 s: no local retry holds the shutdown

                handle = client.get_workflow_handle(f"withdrawal-{accepted['id']}", result_type=WithdrawalResult)
                events = (await handle.fetch_history()).events
                scheduled = [
                    e.activity_task_scheduled_event_attributes.activity_type.name
                    for e in events
                    if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                ]
                assert scheduled == ["reserve_funds"], "the failing local step was not handed to the server"
                local_failures = [
                    json.loads(e.marker_recorded_event_attributes.details["data"].payloads[0].data)
                    for e in events
                    if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and e.marker_recorded_event_attributes.HasField("failure")
                ]
                # tried once in the workflow task, never retried there
                assert [(m["activity_type"], m["attempt"]) for m in local_failures] == [("reserve_funds", 1)], local_failures

                proxy.clear()  # the node is back
                restarted = worker_process(proxied)
                result = await handle.result()
                assert result.status == WithdrawalStatus.COMPLETED, result
                web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
                assert await web3.eth.get_transaction_count(wallet["address"]) == 1
                assert await web3.eth.get_balance(destination) == 2 * 10**17
        finally:
            for process in (stopping, restarted):
                if process is not None and process.poll() is None:
                    process.terminate()
                    process.wait(10)


async def test_sigterm_lets_the_activity_in_flight_finish_before_the_worker_exits(base_settings, task_queue, client, sessions, aws_server):
    """A deploy stops workers with SIGTERM: the worker stops taking work and the signature it is
    waiting for is persisted before it exits (0), so nothing is retried or lost."""
    kms = AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url, alias_prefix=f"t-{uuid.uuid4().hex[:8]}")
    settings = base_settings.model_copy(
        update={"task_queue": task_queue, "signer_backend": "aws-kms", "aws_kms": kms, "worker_shutdown_grace_seconds": 30}
    )
    draining = worker_process(settings)
    restarted = None
    try:
        async with api_client(settings, client) as api:
            wallet = await create_wallet(api)
            await fund(api, wallet, "1")
            aws_server.set_faults({"Sign": {"error": None, "delay": 4, "count": 1}})
            accepted = (await withdraw(api, wallet, random_address(), "0.3")).json()
            await wait_for_status(api, accepted["id"], {"SIGNING"})
            await asyncio.sleep(1)  # inside the 4 s signature
            draining.send_signal(signal.SIGTERM)
            assert await wait_exit(draining, timeout=60) == 0
            async with sessions() as session:
                attempts = (await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == accepted["id"]))).all()
            assert len(attempts) == 1  # the signature finished and was stored before the exit

            restarted = worker_process(settings)
            done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"}, timeout=120)
            assert done["status"] == "COMPLETED" and [a["tx_hash"] for a in done["attempts"]] == [attempts[0].tx_hash]
        history = await client.get_workflow_handle(f"withdrawal-{accepted['id']}").fetch_history()
        signing = [
            e.activity_task_started_event_attributes.attempt
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
            and e.event_id - 1
            in {
                s.event_id
                for s in history.events
                if s.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and s.activity_task_scheduled_event_attributes.activity_type.name == "sign_and_broadcast_transfer"
            }
        ]
        assert signing == [1], "the signing step was retried: the worker did not let it finish"
    finally:
        aws_server.clear_faults()
        for process in (draining, restarted):
            if process is not None and process.poll() is None:
                process.terminate()
                try:  # a draining worker may use its whole grace period on a busy machine
                    process.wait(settings.worker_shutdown_grace_seconds + 15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
