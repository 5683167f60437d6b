"""Exactly-once under chain faults on EVM (issue: never pay twice, never stall, never report
COMPLETED for nothing), each on a real anvil of its own with mining under the test's control:

- a fee bump the KMS refuses (disabled key) after the first attempt is out: the withdrawal is not
  FAILED, keeps its hold, cannot be retried, and completes once when the first attempt is mined;
- a first attempt already at the fee cap: no replacement can be priced; the withdrawal alerts
  (STUCK_AT_FEE_CAP), still reads receipts, acts on a cancel, and completes once mined;
- a nonce released below a waiting withdrawal is filled by a 0-value self-send (GAP_FILL);
- a replacement that costs more than the fee held grows the hold;
- COMPLETED only once final: a transaction taken out by a reorg is sent again and lands once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
from sqlmodel import select

from core.settings import GWEI, AwsKmsSettings, EvmChainSettings
from devnet import local
from models.db import Reservation, Wallet, Withdrawal
from tests.conftest import (
    ALICE,
    api_client,
    create_wallet,
    mining_paused,
    random_address,
    replay_and_record,
    wait_for_status,
    withdraw,
)
from worker import build_worker

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


async def _wait_until(api: httpx.AsyncClient, withdrawal_id: str, what: str, check: Callable[[dict], bool], timeout: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=ALICE)).json()
        if check(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never saw {what}: {body}")
        await asyncio.sleep(0.2)


def _alerts(body: dict) -> list[dict]:
    return [e["detail"] for e in body["history"] if e["status"] == "ALERT"]


def _sent(body: dict) -> bool:
    return bool(body["attempts"]) and all(a["broadcast_at"] for a in body["attempts"])


async def _reserved_eth(api: httpx.AsyncClient, wallet: dict) -> str:
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    return next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"]


def _kms(aws_server) -> AwsKmsSettings:  # type: ignore[no-untyped-def]
    return AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url, alias_prefix=f"t-{uuid.uuid4().hex[:8]}")


async def _key_ref(sessions, wallet_id: str) -> str:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        wallet = await session.get(Wallet, wallet_id)
    assert wallet is not None and wallet.key_ref
    return wallet.key_ref


async def test_a_fee_bump_the_kms_refuses_never_fails_a_sent_withdrawal_nor_lets_it_pay_twice(
    base_settings, task_queue, client, sessions, paused_anvil, aws_server
):
    async with mining_paused(
        base_settings,
        task_queue,
        client,
        sessions,
        paused_anvil,
        bump_after=1,
        settings__signer_backend="aws-kms",
        settings__aws_kms=_kms(aws_server),
    ) as (api, web3, wallet):
        destination = random_address()
        accepted = (await withdraw(api, wallet, destination, "0.25")).json()
        await _wait_until(api, accepted["id"], "the first attempt broadcast", _sent)
        aws_server.client("kms").disable_key(KeyId=await _key_ref(sessions, wallet["id"]))

        alerted = await _wait_until(api, accepted["id"], "an alert", lambda b: bool(_alerts(b)) or b["status"] in FINAL)
        assert alerted["status"] == "CONFIRMING", alerted
        assert [a["code"] for a in _alerts(alerted)] == ["REPLACEMENT_FAILED"]
        assert "SIGNING_FAILED" in _alerts(alerted)[0]["message"]
        assert await _reserved_eth(api, wallet) != "0"  # the hold stays while the attempt can land
        refused = await api.post(f"/v1/withdrawals/{accepted['id']}/retry", headers=ALICE)
        assert refused.status_code == 409, refused.text

        await web3.provider.make_request("evm_mine", [])
        done = await wait_for_status(api, accepted["id"], FINAL)
        assert done["status"] == "COMPLETED", done
        assert done["tx_hash"] in [a["tx_hash"] for a in done["attempts"]]
        assert await web3.eth.get_balance(destination) == 25 * 10**16
        assert await web3.eth.get_transaction_count(wallet["address"]) == 1
        assert await _reserved_eth(api, wallet) == "0"
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v3_replacement_refused_then_mined")


async def test_a_withdrawal_at_the_fee_cap_alerts_acts_on_a_cancel_and_completes_once_mined(
    base_settings, task_queue, client, sessions, paused_anvil
):
    # Fresh anvil: base fee 1 gwei, tip floor 1 gwei. maxFee = min(2 x base + tip, cap) = the cap,
    # so a replacement (+15 %) can never be priced under it.
    async with mining_paused(base_settings, task_queue, client, sessions, paused_anvil, bump_after=1, max_fee_per_gas_cap_wei=25 * GWEI // 10) as (
        api,
        web3,
        wallet,
    ):
        destination = random_address()
        accepted = (await withdraw(api, wallet, destination, "0.25")).json()
        stuck = await _wait_until(api, accepted["id"], "the fee-cap alert", lambda b: bool(_alerts(b)) or b["status"] in FINAL)
        assert [a["code"] for a in _alerts(stuck)] == ["STUCK_AT_FEE_CAP"], stuck
        assert stuck["status"] == "CONFIRMING" and len(stuck["attempts"]) == 1

        cancel = await api.post(f"/v1/withdrawals/{accepted['id']}/cancel", json={"reason": "stuck"}, headers=ALICE)
        assert cancel.status_code == 200, cancel.text
        acted = await _wait_until(api, accepted["id"], "the cancellation tried", lambda b: any("cancellation" in a["message"] for a in _alerts(b)))
        assert [a["code"] for a in _alerts(acted)] == ["STUCK_AT_FEE_CAP", "STUCK_AT_FEE_CAP"]

        await web3.provider.make_request("evm_mine", [])
        done = await wait_for_status(api, accepted["id"], FINAL)
        assert done["status"] == "COMPLETED", done  # the original was mined before any cancellation could be
        assert done["tx_hash"] == done["attempts"][0]["tx_hash"] and len(done["attempts"]) == 1
        assert await web3.eth.get_balance(destination) == 25 * 10**16
        assert await _reserved_eth(api, wallet) == "0"
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v3_stuck_at_fee_cap_cancel_blocked")


async def test_a_nonce_released_below_a_waiting_withdrawal_is_filled_by_a_self_send(
    base_settings, task_queue, client, sessions, paused_anvil, aws_server
):
    async with mining_paused(
        base_settings,
        task_queue,
        client,
        sessions,
        paused_anvil,
        bump_after=2,
        settings__signer_backend="aws-kms",
        settings__aws_kms=_kms(aws_server),
    ) as (api, web3, wallet):
        # A signs nonce 0 slowly; paused meanwhile, it holds before broadcasting. B takes nonce 1.
        aws_server.set_faults({"Sign": {"error": None, "delay": 3, "count": 1}})
        try:
            a = (await withdraw(api, wallet, random_address(), "0.1")).json()
            await wait_for_status(api, a["id"], {"SIGNING"})
            paused = await api.post(f"/v1/withdrawals/{a['id']}/pause", json={"reason": "review"}, headers=ALICE)
            assert paused.status_code == 200, paused.text
            a_signed = await _wait_until(api, a["id"], "A signed", lambda body: bool(body["attempts"]))
        finally:
            aws_server.clear_faults()
        assert a_signed["nonce"] == 0 and a_signed["attempts"][0]["broadcast_at"] is None
        b_destination = random_address()
        b = (await withdraw(api, wallet, b_destination, "0.1")).json()
        b_sent = await _wait_until(api, b["id"], "B broadcast", _sent)
        assert b_sent["nonce"] == 1

        # Cancelled before it was ever sent: A ends CANCELLED and nonce 0 is no one's. B waits
        # behind it; within its first bump delay a 0-value self-send takes nonce 0.
        assert (await api.post(f"/v1/withdrawals/{a['id']}/cancel", json={}, headers=ALICE)).status_code == 200
        assert (await wait_for_status(api, a["id"], FINAL))["status"] == "CANCELLED"
        alerted = await _wait_until(api, b["id"], "the gap alert", lambda body: bool(_alerts(body)))
        assert [x["code"] for x in _alerts(alerted)] == ["NONCE_GAP"], alerted
        async with sessions() as session:
            fillers = (await session.exec(select(Withdrawal).where(Withdrawal.wallet_id == wallet["id"], Withdrawal.kind == "GAP_FILL"))).all()
        assert [(f.nonce, f.amount, f.destination) for f in fillers] == [(0, 0, wallet["address"])]
        filler = await _wait_until(api, fillers[0].id, "the filler broadcast", _sent)

        await web3.provider.make_request("evm_mine", [])
        assert (await wait_for_status(api, b["id"], FINAL))["status"] == "COMPLETED"
        assert (await wait_for_status(api, filler["id"], FINAL))["status"] == "COMPLETED"
        fill_tx = await web3.eth.get_transaction(filler["attempts"][0]["tx_hash"])
        assert (fill_tx["nonce"], fill_tx["value"], fill_tx["to"]) == (0, 0, wallet["address"])
        assert await web3.eth.get_balance(b_destination) == 10**17
        assert await web3.eth.get_transaction_count(wallet["address"]) == 2
        b_done = (await api.get(f"/v1/withdrawals/{b['id']}", headers=ALICE)).json()
        assert len(b_done["attempts"]) == 1  # B never bumped itself into the fee cap over a gap
    await replay_and_record(client, b_done["workflow_id"], "WithdrawalWorkflow__v3_waited_over_a_filled_gap")
    await replay_and_record(client, filler["workflow_id"], "WithdrawalWorkflow__v3_gap_fill")
    await replay_and_record(client, a_signed["workflow_id"], "WithdrawalWorkflow__v3_cancelled_after_signing")


async def test_a_replacement_that_costs_more_grows_the_hold(base_settings, task_queue, client, sessions, paused_anvil):
    async with mining_paused(base_settings, task_queue, client, sessions, paused_anvil, bump_after=1) as (api, web3, wallet):
        accepted = (await withdraw(api, wallet, random_address(), "0.25")).json()
        async with sessions() as session:
            for _ in range(100):
                reservation = await session.get(Reservation, accepted["id"])
                if reservation is not None:
                    break
                await asyncio.sleep(0.1)
        assert reservation is not None
        held_at_reserve = reservation.fee_amount
        bumped = await _wait_until(api, accepted["id"], "two attempts out", lambda b: len(b["attempts"]) >= 2 and _sent(b))
        async with sessions() as session:
            reservation = await session.get(Reservation, accepted["id"])
            from models.db import TransferAttempt

            attempts = (await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == accepted["id"]))).all()
        assert reservation is not None and reservation.state == "HELD"
        assert reservation.fee_amount == max(a.max_fee for a in attempts) > held_at_reserve, bumped
        await web3.provider.make_request("evm_mine", [])
        assert (await wait_for_status(api, accepted["id"], FINAL))["status"] == "COMPLETED"
    await replay_and_record(client, bumped["workflow_id"], "WithdrawalWorkflow__v3_bumped")
    await replay_and_record(client, bumped["workflow_id"], "WithdrawalWorkflow__v6_bumped")
    await replay_and_record(client, bumped["workflow_id"], "WithdrawalWorkflow__v9_bumped")


async def test_a_long_wait_continues_as_new_and_completes_once(base_settings, task_queue, client, sessions, paused_anvil):
    """Every confirmation round adds history; after `confirmation_rounds_per_run` rounds the
    run continues as new, carrying what it knows, and the new run finishes the withdrawal."""
    async with mining_paused(base_settings, task_queue, client, sessions, paused_anvil, bump_after=0.5, settings__confirmation_rounds_per_run=2) as (
        api,
        web3,
        wallet,
    ):
        destination = random_address()
        accepted = (await withdraw(api, wallet, destination, "0.25")).json()
        workflow_id = f"withdrawal-{accepted['id']}"
        runs: list = []
        for _ in range(200):
            runs = [r async for r in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
            if len(runs) >= 2:
                break
            await asyncio.sleep(0.1)
        assert len(runs) >= 2, "the run never continued as new"
        await web3.provider.make_request("evm_mine", [])
        done = await wait_for_status(api, accepted["id"], FINAL)
        assert done["status"] == "COMPLETED", done
        assert await web3.eth.get_balance(destination) == 25 * 10**16
        assert await web3.eth.get_transaction_count(wallet["address"]) == 1
        assert [e["status"] for e in done["history"]].count("CONFIRMING") == 1
    runs = sorted([r async for r in client.list_workflows(f"WorkflowId = '{workflow_id}'")], key=lambda r: r.start_time)
    assert runs[0].status.name == "CONTINUED_AS_NEW" and runs[-1].status.name == "COMPLETED"
    await replay_and_record(client, workflow_id, "WithdrawalWorkflow__v3_continued_as_new_first_run", run_id=runs[0].run_id)
    await replay_and_record(client, workflow_id, "WithdrawalWorkflow__v6_continued_as_new_first_run", run_id=runs[0].run_id)
    await replay_and_record(client, workflow_id, "WithdrawalWorkflow__v3_continued_as_new_last_run", run_id=runs[-1].run_id)
    # local-steps: the continued run finishes with a local activity
    await replay_and_record(client, workflow_id, "WithdrawalWorkflow__v9_continued_as_new_first_run", run_id=runs[0].run_id)
    await replay_and_record(client, workflow_id, "WithdrawalWorkflow__v9_continued_as_new_last_run", run_id=runs[-1].run_id)


async def test_completed_means_final_and_a_reorged_transfer_lands_once(base_settings, task_queue, client, sessions, tmp_path):
    """Default finality ("auto"): anvil has a `finalized` block (two epochs back; one slot per
    epoch here, so latest - 2). A transfer mined and then reorged away before it was final is
    sent again as the same bytes and completes once, when its new block is finalized."""
    anvil = local.start_anvil(local.free_port(), tmp_path, extra_args=["--slots-in-an-epoch", "1"])
    try:
        rpc = anvil.info["rpc_url"]
        chain = EvmChainSettings(chain_id=31337, rpc_url=rpc, poll_interval_seconds=0.2, fee_bump_after_seconds=30)
        assert chain.finality == "auto"
        settings = base_settings.model_copy(update={"task_queue": task_queue, "chains": {"anvil": chain}})
        from web3 import AsyncHTTPProvider, AsyncWeb3

        web3 = AsyncWeb3(AsyncHTTPProvider(rpc))
        async with build_worker(client, settings, sessions), api_client(settings, client) as api:
            wallet = await create_wallet(api)
            await web3.provider.make_request("anvil_setBalance", [wallet["address"], hex(10**18)])
            destination = random_address()
            accepted = (await withdraw(api, wallet, destination, "0.25")).json()
            sent = await _wait_until(api, accepted["id"], "the attempt sent", _sent)
            tx_hash = sent["attempts"][0]["tx_hash"]
            for _ in range(100):  # anvil mines it at once (automine)
                receipt = await web3.eth.get_transaction_receipt(tx_hash) if await _has_receipt(web3, tx_hash) else None
                if receipt is not None:
                    break
                await asyncio.sleep(0.1)
            assert receipt is not None
            await asyncio.sleep(1)  # several confirmation rounds: mined, not final
            assert (await api.get(f"/v1/withdrawals/{accepted['id']}", headers=ALICE)).json()["status"] == "CONFIRMING"

            await web3.provider.make_request("anvil_reorg", [1, []])  # its block is replaced by an empty one
            assert await web3.eth.get_balance(destination) == 0
            for _ in range(6):
                await web3.provider.make_request("evm_mine", [])
                await asyncio.sleep(0.3)
            done = await wait_for_status(api, accepted["id"], FINAL)
            assert done["status"] == "COMPLETED", done
            assert done["tx_hash"] == tx_hash and len(done["attempts"]) == 1  # the same bytes, sent again
            final = await web3.eth.get_block("finalized")
            assert final["number"] >= done["block_number"] != receipt["blockNumber"]
            assert await web3.eth.get_balance(destination) == 25 * 10**16
            assert await web3.eth.get_transaction_count(wallet["address"]) == 1
        await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v3_reorged_and_sent_again")
    finally:
        anvil.stop()


async def _has_receipt(web3, tx_hash: str) -> bool:  # type: ignore[no-untyped-def]
    from web3.exceptions import TransactionNotFound

    try:
        await web3.eth.get_transaction_receipt(tx_hash)
        return True
    except TransactionNotFound:
        return False


async def test_an_unexpected_error_is_retried_counted_and_alerted_then_passes_once_fixed(base_settings, task_queue, client, sessions, paused_anvil):
    """A bug (here: a stored attempt whose fee fields were damaged, so the bump meets a
    TypeError) is not a silent infinite retry: code UNEXPECTED_ERROR, counted by type, alerted on
    the withdrawal after N attempts; once the cause is fixed the same step passes."""
    from prometheus_client import REGISTRY
    from sqlalchemy import update

    from models.db import TransferAttempt

    def unexpected() -> float:
        return REGISTRY.get_sample_value("custody_activity_unexpected_errors_total", {"activity": "bump_fee", "exception": "TypeError"}) or 0.0

    before = unexpected()
    async with mining_paused(
        base_settings,
        task_queue,
        client,
        sessions,
        paused_anvil,
        bump_after=0.5,
        settings__unexpected_error_alert_after_attempts=2,
    ) as (api, web3, wallet):
        accepted = (await withdraw(api, wallet, random_address(), "0.25")).json()
        sent = await _wait_until(api, accepted["id"], "the first attempt out", _sent)
        tx_hash = sent["attempts"][0]["tx_hash"]
        async with sessions() as session, session.begin():
            fee_params = (await session.exec(select(TransferAttempt.fee_params).where(TransferAttempt.tx_hash == tx_hash))).one()
            await session.exec(update(TransferAttempt).where(TransferAttempt.tx_hash == tx_hash).values(fee_params={}))  # type: ignore[arg-type]
        stuck = await _wait_until(api, accepted["id"], "the stuck alert", lambda b: bool(_alerts(b)), timeout=90)
        assert [a["code"] for a in _alerts(stuck)] == ["ACTIVITY_STUCK"]
        assert "unexpected TypeError in bump_fee" in _alerts(stuck)[0]["message"]
        assert stuck["status"] == "CONFIRMING"
        assert unexpected() - before >= 2

        async with sessions() as session, session.begin():
            await session.exec(update(TransferAttempt).where(TransferAttempt.tx_hash == tx_hash).values(fee_params=fee_params))  # type: ignore[arg-type]
        await _wait_until(api, accepted["id"], "the bump made once fixed", lambda b: len(b["attempts"]) >= 2 and _sent(b), timeout=90)
        await web3.provider.make_request("evm_mine", [])
        done = await wait_for_status(api, accepted["id"], FINAL)
        assert done["status"] == "COMPLETED", done
        assert await web3.eth.get_transaction_count(wallet["address"]) == 1


async def test_a_replaced_sweep_records_the_amount_of_the_attempt_that_landed(base_settings, task_queue, client, sessions, paused_anvil):
    """A sweep's replacement pays more fee out of the same total, so it moves less. When the
    original (not the replacement) is the one mined, the withdrawal records what really moved."""
    from temporalio.common import WorkflowIDReusePolicy

    from devnet.faultproxy import FaultProxy
    from models.db import Reservation, TransferAttempt
    from models.intent_seal import seal
    from models.payloads import WithdrawalInput
    from workflows.withdrawal import WithdrawalWorkflow

    # The cap admits exactly one replacement (3 gwei, then 3.45; 3.97 would exceed 3.5), so the
    # attempts the test reads are all there will ever be. Custody reaches anvil through a fault
    # proxy, so the test can keep it from sending its replacement again while the original (as
    # another node saw it) is mined.
    with FaultProxy(paused_anvil.info["rpc_url"]) as proxy:
        async with mining_paused(
            base_settings,
            task_queue,
            client,
            sessions,
            paused_anvil,
            bump_after=1,
            custody_rpc=proxy.url,
            max_fee_per_gas_cap_wei=35 * GWEI // 10,
        ) as (api, web3, wallet):
            destination = random_address()
            sweep = Withdrawal(
                id=str(uuid.uuid4()),
                owner="alice",
                wallet_id=wallet["id"],
                chain="anvil",
                asset="ETH",
                destination=destination,
                amount=0,
                sweep=True,
                idempotency_key=uuid.uuid4().hex,
                request_hash="sweep",
            )
            seal(base_settings.intent_seal_key_bytes, sweep)
            async with sessions() as session, session.begin():
                session.add(sweep)
            await client.start_workflow(
                WithdrawalWorkflow.run,
                WithdrawalInput(withdrawal_id=sweep.id, chain="anvil"),
                id=f"withdrawal-{sweep.id}",
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            )
            await _wait_until(
                api,
                sweep.id,
                "the one replacement out, and no more possible",
                lambda b: _sent(b) and any(a["code"] == "STUCK_AT_FEE_CAP" for a in _alerts(b)),
            )
            async with sessions() as session:
                attempts = (await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == sweep.id))).all()
            original, replacement = sorted(attempts, key=lambda a: a.id)
            assert int(replacement.fee_params["value"]) < int(original.fee_params["value"])
            # Another node mined the original: the replacement leaves the pool, the original lands.
            proxy.add(action="respond", rpc_method="eth_sendRawTransaction", rpc_error={"code": -32000, "message": "already known"})
            await web3.provider.make_request("anvil_dropTransaction", [replacement.tx_hash])
            await web3.provider.make_request("eth_sendRawTransaction", ["0x" + original.raw_tx.removeprefix("0x")])
            await web3.provider.make_request("evm_mine", [])
            done = await wait_for_status(api, sweep.id, FINAL)
            assert done["status"] == "COMPLETED" and done["tx_hash"] == original.tx_hash, done
            moved = int(original.fee_params["value"])
            assert int(done["amount_base_units"]) == moved == await web3.eth.get_balance(destination)
            assert await web3.eth.get_balance(wallet["address"]) == 0
            async with sessions() as session:
                reservation = await session.get(Reservation, sweep.id)
            assert reservation is not None and (reservation.state, reservation.amount) == ("SETTLED", moved)


async def test_a_reorg_between_the_nonce_and_the_receipt_reads_is_not_a_lost_slot(tmp_path):
    """Found by the suite: transfer_status read the head's nonce (1: our transfer mined), then a
    reorg took the transfer out before the receipts were read (none): "nonce consumed
    externally", FAILED, while the same bytes were about to be mined again. A slot is lost only
    when a *final* block has the nonce used and no receipt of ours. The receipt read is held at
    the wire (a delay at the proxy) while the reorg happens."""
    from eth_account import Account as EthAccount

    from chains.base import OnChainState, TransferIntent
    from chains.registry import build_chain
    from devnet.faultproxy import FaultProxy

    anvil = local.start_anvil(local.free_port(), tmp_path, extra_args=["--slots-in-an-epoch", "1"])
    try:
        with FaultProxy(anvil.info["rpc_url"]) as proxy:
            chain = build_chain("anvil", EvmChainSettings(chain_id=31337, rpc_url=proxy.url, faucet_enabled=True))
            key = EthAccount.create()

            async def sign(digest: bytes) -> bytes:
                signed = EthAccount._sign_hash(digest, key.key)  # type: ignore[attr-defined]
                return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v - 27])

            await chain.faucet(key.address, chain.asset("ETH"), 10**18)
            for _ in range(3):  # the funding is final: only our transfer is young
                await anvil_rpc(anvil, "evm_mine", [])
            intent = TransferIntent(key.address, random_address(), chain.asset("ETH"), 10**15)
            signed = await chain.sign_transfer(intent, 0, sign)
            await chain.broadcast(signed)  # mined at once (automine): the head's nonce is now 1
            assert (await chain.transfer_status(intent, [signed])).state == OnChainState.PENDING  # mined, not final

            proxy.add(action="delay", seconds=2, rpc_method="eth_getTransactionReceipt", count=1)
            receipts_before = proxy.seen("eth_getTransactionReceipt")
            status = asyncio.create_task(chain.transfer_status(intent, [signed]))
            while proxy.seen("eth_getTransactionReceipt") == receipts_before:  # the nonce was read; the receipt is held
                await asyncio.sleep(0.02)
            await anvil_rpc(anvil, "anvil_reorg", [1, []])  # our block replaced by an empty one
            assert (await status).state == OnChainState.PENDING  # not SLOT_LOST: nothing final used the nonce
            await getattr(chain, "close", _nothing)()
    finally:
        anvil.stop()


async def _nothing() -> None:
    return None


async def anvil_rpc(anvil, method: str, params: list) -> object:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as http:
        answer = (await http.post(anvil.info["rpc_url"], json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})).json()
    assert "error" not in answer, answer
    return answer["result"]
