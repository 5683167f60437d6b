"""Key pools on EVM (anvil): HODL -> Bank -> single-use Explorer keys, leases, the rebalance.

Each test gets its own chain name on the session's anvil node, so its pool (owner `pool:<chain>`)
starts empty however many tests ran before it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from eth_account import Account
from eth_keys import keys as eth_keys
from sqlmodel import col, select
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.service import RPCError
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.pools import PoolActivities, lease_explorer
from chains.base import TransferIntent
from chains.evm import EvmChain
from chains.registry import ChainRegistry
from core.settings import AwsKmsSettings
from models.db import TransferAttempt, Wallet, Withdrawal
from models.payloads import LeaseRequest, PoolStepInput, RebalanceInput, RebalanceResult
from models.pools import KeyState, PoolKey, PoolTier, pool_owner
from signers.registry import SignerSet
from tests.conftest import ALICE, custody, random_address, wait_exit, wait_for_status, worker_process
from tests.support.pools import keys_of, pool_settings, rebalance, show, with_pool, withdrawal
from worker import build_worker, ensure_rebalance_schedules
from workflows.rebalance import RebalanceWorkflow

OPS = {"Authorization": "Bearer dev-ops-key"}
ETH = 10**18
GAS = 21_000


@pytest.fixture
def chain() -> str:
    return f"pool{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(base_settings, task_queue, chain):  # type: ignore[no-untyped-def]
    return with_pool(base_settings, task_queue, chain, pool_settings())


@pytest.fixture
def web3(base_settings) -> AsyncWeb3:  # type: ignore[no-untyped-def]
    return AsyncWeb3(AsyncHTTPProvider(base_settings.chains["anvil"].rpc_url))


# ------------------------------------------------------------------------------ the full cycle


async def test_full_cycle_lease_use_return_recover_refill_and_approved_hodl_topup(api, client, settings, chain, web3):
    # 1. A first run (started over the API: no schedule in tests) makes the HODL and Bank keys;
    #    nothing is funded yet.
    started = await api.post(f"/v1/pools/{chain}/rebalance", headers=OPS)
    assert started.status_code == 202 and started.json()["mode"] == "started", started.text
    first: RebalanceResult = await client.get_workflow_handle(started.json()["workflow_id"], result_type=RebalanceResult).result()
    assert first.status == "COMPLETED", first
    pool = await show(api, chain)
    assert pool["sizes"]["hodl"] == {"active": 1} and pool["sizes"]["bank"] == {"active": 1}
    assert pool["sizes"]["explorer"] == {}
    hodl, bank = keys_of(pool, "hodl")[0], keys_of(pool, "bank")[0]
    assert (hodl["label"], bank["label"]) == ("hodl", "bank-1")
    assert pool["last_rebalance"]["status"] == "COMPLETED"

    # 2. HODL funded (cold storage, from outside). The bank top-up is a HODL movement above
    #    hodl_auto_approve_up_to: it waits for an operator and nothing is sent meanwhile.
    await web3.provider.make_request("anvil_setBalance", [hodl["address"], hex(2 * ETH)])
    second = await rebalance(client, settings, chain)
    assert second.status == "COMPLETED" and len(second.pending_approvals) == 1, second
    topup_id = second.pending_approvals[0]
    held = await wait_for_status(api, topup_id, {"AWAITING_APPROVAL"}, headers=OPS)
    assert held["owner"] == pool_owner(chain) and held["amount"] == "0.1" and held["attempts"] == []
    await asyncio.sleep(1)
    assert (await withdrawal(api, topup_id))["status"] == "AWAITING_APPROVAL"
    moves = (await api.get("/v1/audit", params={"object_id": topup_id}, headers={"Authorization": "Bearer dev-admin-key"})).json()
    requested = [e for e in moves["entries"] if e["action"] == "pool.move_requested"]
    assert len(requested) == 1 and requested[0]["details"]["to_wallet"] == bank["wallet_id"], moves  # pool moves are audited
    assert await web3.eth.get_transaction_count(hodl["address"]) == 0
    assert await web3.eth.get_balance(bank["address"]) == 0
    assert second.explorers_created == 0 and any("banks can fund 0" in n for n in second.notes)
    # The same four-eyes approval as any withdrawal; a second run does not top up twice.
    again = await rebalance(client, settings, chain)
    assert again.pending_approvals == [topup_id]
    approved = await api.post(f"/v1/withdrawals/{topup_id}/approve", json={"reason": "refill bank"}, headers=OPS)
    assert approved.status_code == 200, approved.text
    assert (await wait_for_status(api, topup_id, {"COMPLETED", "FAILED"}, headers=OPS))["status"] == "COMPLETED"
    assert await web3.eth.get_balance(bank["address"]) == ETH // 10

    # 3. Explorers created and funded from the bank, each with exactly the target balance.
    third = await rebalance(client, settings, chain)
    assert third.status == "COMPLETED" and third.explorers_created == 2, third
    pool = await show(api, chain)
    explorers = keys_of(pool, "explorer", "AVAILABLE")
    assert len(explorers) == 2 and {e["funded_by"] for e in explorers} == {bank["wallet_id"]}
    for explorer in explorers:
        assert await web3.eth.get_balance(explorer["address"]) == ETH // 100

    # 4. Lease (operators only), use once, return.
    assert (await api.post(f"/v1/pools/{chain}/explorers/lease", headers=ALICE)).status_code == 403
    leased = await api.post(f"/v1/pools/{chain}/explorers/lease", headers=OPS)
    assert leased.status_code == 201, leased.text
    lease = leased.json()
    assert lease["state"] == "LEASED" and lease["leased_by"] == "ops"
    destination = random_address()
    spend = {"to": destination, "asset": "ETH", "amount": "0.004"}
    path = f"/v1/pools/{chain}/explorers/{lease['lease_id']}/withdrawals"
    used = await api.post(path, json=spend, headers={**OPS, "Idempotency-Key": "use-1"})
    assert used.status_code == 202, used.text
    assert (await api.post(path, json=spend, headers={**OPS, "Idempotency-Key": "use-1"})).status_code == 200
    twice = await api.post(path, json=spend, headers={**OPS, "Idempotency-Key": "use-2"})
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "LEASE_ALREADY_USED"
    spent = await wait_for_status(api, used.json()["id"], {"COMPLETED", "FAILED"}, headers=OPS)
    assert spent["status"] == "COMPLETED" and spent["wallet_id"] == lease["wallet_id"]
    assert await web3.eth.get_balance(destination) == 4 * ETH // 1000
    returned = await api.post(f"/v1/pools/{chain}/explorers/{lease['lease_id']}/return", headers=OPS)
    assert returned.status_code == 200 and returned.json()["state"] == "RETIRED"
    late = await api.post(path, json=spend, headers={**OPS, "Idempotency-Key": "use-3"})
    assert late.status_code == 409 and late.json()["error"]["code"] in ("LEASE_ALREADY_USED", "LEASE_NOT_ACTIVE")

    # 5. The next run recovers the retired explorer into its bank, leaving 0 wei, and refills
    #    the explorers (1 available < 2).
    left = await web3.eth.get_balance(lease["address"])
    bank_before = await web3.eth.get_balance(bank["address"])
    fourth = await rebalance(client, settings, chain)
    assert fourth.status == "COMPLETED" and fourth.recovered == 1 and fourth.explorers_created == 2, fourth
    assert await web3.eth.get_balance(lease["address"]) == 0
    pool = await show(api, chain)
    recovered = next(k for k in pool["keys"] if k["wallet_id"] == lease["wallet_id"])
    assert recovered["state"] == "RECOVERED"
    sweep = await withdrawal(api, recovered["recovery_withdrawal_id"])
    assert sweep["status"] == "COMPLETED" and sweep["to"] == bank["address"]
    tx = await web3.eth.get_transaction(sweep["tx_hash"])
    assert tx["type"] == 0 and int(sweep["fee_paid_base_units"]) == GAS * tx["gasPrice"]
    assert int(sweep["amount_base_units"]) == left - GAS * tx["gasPrice"] == tx["value"]
    assert recovered["recovered_amount"] == sweep["amount"]
    fundings = [k["funding_withdrawal_id"] for k in keys_of(pool, "explorer", "AVAILABLE")]
    funding_fees = [int((await withdrawal(api, f))["fee_paid_base_units"]) for f in fundings[1:]]
    assert await web3.eth.get_balance(bank["address"]) == bank_before + tx["value"] - 2 * ETH // 100 - sum(funding_fees)
    assert pool["sizes"]["explorer"] == {"available": 3, "recovered": 1}
    last = pool["last_rebalance"]
    assert last["status"] == "COMPLETED" and last["result"]["recovered"] == 1
    assert last["result"]["recovered_amount"] == sweep["amount"] and last["result"]["sizes"]["explorer"]["available"] == 3

    # Bank below target again: its top-up waits for approval; tidy up by cancelling it.
    for pending in fourth.pending_approvals:
        await api.post(f"/v1/withdrawals/{pending}/cancel", json={"reason": "test over"}, headers=OPS)


# ------------------------------------------------------------------------------ leases


async def _available_explorers(sessions, chain: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    ids = []
    async with sessions() as session, session.begin():
        for _ in range(n):
            wallet = Wallet(
                id=str(uuid.uuid4()),
                owner=pool_owner(chain),
                chain=chain,
                label=f"explorer-{uuid.uuid4().hex[:8]}",
                status="ACTIVE",
                address=random_address(),
                signer_backend="local",
            )
            session.add(wallet)
            await session.flush()
            session.add(PoolKey(wallet_id=wallet.id, chain=chain, tier=PoolTier.EXPLORER, state=KeyState.AVAILABLE))
            ids.append(wallet.id)
    return ids


async def test_concurrent_leases_never_share_a_key_and_expired_leases_are_reclaimed(api, sessions, settings, chain):
    made = await _available_explorers(sessions, chain, 10)
    responses = await asyncio.gather(*(api.post(f"/v1/pools/{chain}/explorers/lease", headers=OPS) for _ in range(14)))
    granted = [r.json() for r in responses if r.status_code == 201]
    refused = [r.json() for r in responses if r.status_code != 201]
    assert len(granted) == 10 and sorted(g["wallet_id"] for g in granted) == sorted(made)
    assert len({g["lease_id"] for g in granted}) == 10
    assert [r["error"]["code"] for r in refused] == ["NO_EXPLORER_AVAILABLE"] * 4

    # The activity other workflows use: a retry with the same lease id gets the same key.
    await _available_explorers(sessions, chain, 1)
    request = LeaseRequest(chain=chain, leased_by="some-workflow", lease_id=f"wf-{uuid.uuid4()}")
    first, retried = await asyncio.gather(lease_explorer(sessions, settings, request), lease_explorer(sessions, settings, request))
    assert first.wallet_id == retried.wallet_id and first.lease_id == retried.lease_id

    # An Idempotency-Key on the HTTP lease does the same.
    await _available_explorers(sessions, chain, 1)
    keyed = [await api.post(f"/v1/pools/{chain}/explorers/lease", headers={**OPS, "Idempotency-Key": "k1"}) for _ in range(2)]
    assert [r.status_code for r in keyed] == [201, 200] and keyed[0].json()["wallet_id"] == keyed[1].json()["wallet_id"]

    # A lease not returned in time is reclaimed (retired) and can no longer be used.
    expired = granted[0]
    async with sessions() as session, session.begin():
        key = await session.get(PoolKey, expired["wallet_id"])
        key.lease_expires_at = key.leased_at
        session.add(key)
    spend = {"to": random_address(), "asset": "ETH", "amount": "0.001"}
    late = await api.post(f"/v1/pools/{chain}/explorers/{expired['lease_id']}/withdrawals", json=spend, headers={**OPS, "Idempotency-Key": "x"})
    assert late.status_code == 409 and late.json()["error"]["code"] == "LEASE_NOT_ACTIVE"
    pool = await show(api, chain)
    reclaimed = next(k for k in pool["keys"] if k["wallet_id"] == expired["wallet_id"])
    assert reclaimed["state"] == "RETIRED" and reclaimed["retired_reason"] == "LEASE_EXPIRED"
    assert pool["sizes"]["explorer"] == {"leased": 11, "retired": 1}
    # Someone else's lease is not found; returning twice answers the same.
    other = await api.post(f"/v1/pools/{chain}/explorers/{granted[1]['lease_id']}/return", headers=ALICE)
    assert other.status_code == 403
    for _ in range(2):
        back = await api.post(f"/v1/pools/{chain}/explorers/{granted[1]['lease_id']}/return", headers=OPS)
        assert back.status_code == 200 and back.json()["state"] == "RETIRED"


# ------------------------------------------------------------------------------ schedules


async def test_schedule_is_created_once_with_overlap_skip_whoever_starts(client, settings, chain):
    schedule_id = f"rebalance-{chain}"
    try:
        results = await asyncio.gather(*(ensure_rebalance_schedules(client, settings) for _ in range(3)))
        assert results == [[schedule_id]] * 3
        assert await ensure_rebalance_schedules(client, settings) == [schedule_id]
        described = await client.get_schedule_handle(schedule_id).describe()
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "RebalanceWorkflow" and action.id == schedule_id and action.task_queue == settings.task_queue
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert [i.every.total_seconds() for i in described.schedule.spec.intervals] == [3600]
        for _ in range(50):  # visibility is eventually consistent
            listed = [s.id async for s in await client.list_schedules() if s.id == schedule_id]
            if listed:
                break
            await asyncio.sleep(0.1)
        assert listed == [schedule_id]
        # A worker started with a new interval brings the one schedule in line.
        changed = settings.model_copy(update={"pools": {chain: pool_settings(rebalance_interval_seconds=7200)}})
        assert await ensure_rebalance_schedules(client, changed) == [schedule_id]
        described = await client.get_schedule_handle(schedule_id).describe()
        assert [i.every.total_seconds() for i in described.schedule.spec.intervals] == [7200]
    finally:
        try:
            await client.get_schedule_handle(schedule_id).delete()
        except RPCError:
            pass


# ------------------------------------------------------------------------------ crash safety


async def test_worker_killed_during_rebalance_does_not_double_fund(base_settings, task_queue, chain, client, sessions, web3):
    settings = with_pool(
        base_settings,
        task_queue,
        chain,
        pool_settings(min_available_explorers=3, explorers_to_create=1, hodl_auto_approve_up_to="1"),
    )
    crashing = worker_process(settings, chaos_after="sign_transfer")
    try:
        # Worker start created the schedule; remove it so no scheduled run joins this test.
        handle = client.get_schedule_handle(f"rebalance-{chain}")
        for _ in range(150):
            try:
                described = await handle.describe()
                break
            except RPCError:
                await asyncio.sleep(0.1)
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        await handle.delete()

        first = await rebalance(client, settings, chain)  # keys only: nothing to sign yet
        assert first.status == "COMPLETED"
        async with sessions() as session:
            rows = (await session.exec(select(Wallet).where(Wallet.owner == pool_owner(chain)))).all()
        hodl = next(w for w in rows if w.label == "hodl")
        bank = next(w for w in rows if w.label == "bank-1")
        await web3.provider.make_request("anvil_setBalance", [hodl.address, hex(ETH)])

        run_id = f"rebalance-{chain}-crash"
        await client.start_workflow(RebalanceWorkflow.run, RebalanceInput(chain=chain), id=run_id, task_queue=task_queue)
        assert await wait_exit(crashing, timeout=60) == 137  # right after the top-up was signed and stored
        assert await web3.eth.get_transaction_count(hodl.address) == 0

        async with build_worker(client, settings, sessions):
            result: RebalanceResult = await client.get_workflow_handle(run_id, result_type=RebalanceResult).result()
            assert result.status == "COMPLETED" and result.explorers_created == 3, result
            # The same run again (a reset / re-run of the same id) finds every row done: no new transfer.
            again = await rebalance(client, settings, chain, workflow_id=run_id)
            assert again.status == "COMPLETED" and again.explorers_created == 0

        assert await web3.eth.get_transaction_count(hodl.address) == 1
        assert await web3.eth.get_transaction_count(bank.address) == 3
        async with sessions() as session:
            moves = (await session.exec(select(Withdrawal).where(Withdrawal.owner == pool_owner(chain)).order_by(col(Withdrawal.created_at)))).all()
            attempts = (await session.exec(select(TransferAttempt).where(col(TransferAttempt.withdrawal_id).in_([m.id for m in moves])))).all()
            explorers = (await session.exec(select(PoolKey).where(PoolKey.chain == chain, PoolKey.tier == PoolTier.EXPLORER))).all()
        assert sorted(m.idempotency_key.split(":")[3] for m in moves) == ["fund"] * 3 + ["topup"]
        assert all(m.status == "COMPLETED" for m in moves) and len(attempts) == 4
        assert await web3.eth.get_balance(bank.address) == ETH // 10 - 3 * ETH // 100 - sum(m.fee_paid for m in moves if m.wallet_id == bank.id)
        assert len(explorers) == 3 and {k.state for k in explorers} == {KeyState.AVAILABLE}
        for key in explorers:
            async with sessions() as session:
                address = (await session.get(Wallet, key.wallet_id)).address
            assert await web3.eth.get_balance(address) == ETH // 100

        # And step by step: re-running one planning step inserts nothing new.
        activities = PoolActivities(sessions, ChainRegistry.from_settings(settings), SignerSet(settings, sessions), settings)
        step = PoolStepInput(chain=chain, run_key=run_id)
        assert (await activities.plan_explorer_funding(step)).transfers == []
        assert (await activities.plan_explorers(step)).wallets == []
    finally:
        if crashing.poll() is None:
            crashing.terminate()
            crashing.wait(10)


# ------------------------------------------------------------------------------ CLI


async def test_cli_pools_rebalance_and_show(api_url, client, settings, chain):
    code, out, err = await custody(api_url, "pools", "rebalance", chain, key="dev-ops-key")
    assert code == 0 and out.startswith("rebalance: started rebalance-"), (out, err)
    workflow_id = out.split()[-1]
    await client.get_workflow_handle(workflow_id).result()
    code, out, err = await custody(api_url, "pools", "show", chain, key="dev-ops-key")
    assert code == 0, err
    assert "hodl      active 1" in out and "bank      active 1" in out and f"last rebalance: {workflow_id} COMPLETED" in out
    assert (await custody(api_url, "pools", "show", chain))[2].startswith("error: FORBIDDEN")  # alice: no operator

    # With the schedule in place, `rebalance` triggers it (overlap SKIP) instead.
    await ensure_rebalance_schedules(client, settings)
    handle = client.get_schedule_handle(f"rebalance-{chain}")
    try:
        code, out, _ = await custody(api_url, "pools", "rebalance", chain, key="dev-ops-key")
        assert code == 0 and out.strip() == f"rebalance: triggered schedule rebalance-{chain}"
        for _ in range(100):
            actions = (await handle.describe()).info.recent_actions
            if actions:
                break
            await asyncio.sleep(0.1)
        triggered = actions[0].action.workflow_id
        assert triggered.startswith(f"rebalance-{chain}-")
        assert (await client.get_workflow_handle(triggered, result_type=RebalanceResult).result()).status == "COMPLETED"
    finally:
        await handle.delete()


# ------------------------------------------------------------------------------ HODL backend


async def test_hodl_key_on_its_own_signer_backend(base_settings, task_queue, chain, client, sessions, web3, aws_server):
    """hodl_signer_backend: the HODL key is made in (and signs from) AWS KMS while banks and
    explorers stay in the default local keystore."""
    settings = with_pool(
        base_settings,
        task_queue,
        chain,
        pool_settings(min_available_explorers=0, hodl_auto_approve_up_to="1", hodl_signer_backend="aws-kms"),
    ).model_copy(
        update={"aws_kms": AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url, alias_prefix=f"t-{uuid.uuid4().hex[:8]}")}
    )
    async with build_worker(client, settings, sessions):
        assert (await rebalance(client, settings, chain)).status == "COMPLETED"
        async with sessions() as session:
            rows = {w.label: w for w in (await session.exec(select(Wallet).where(Wallet.owner == pool_owner(chain)))).all()}
        assert rows["hodl"].signer_backend == "aws-kms" and rows["hodl"].key_ref.startswith("arn:aws:kms:")
        assert rows["bank-1"].signer_backend == "local"
        await web3.provider.make_request("anvil_setBalance", [rows["hodl"].address, hex(ETH)])
        result = await rebalance(client, settings, chain)
        assert result.status == "COMPLETED" and result.banks_funded == 1 and result.pending_approvals == [], result
    assert await web3.eth.get_balance(rows["bank-1"].address) == ETH // 10
    assert await web3.eth.get_transaction_count(rows["hodl"].address) == 1


# ------------------------------------------------------------------------------ EVM sweep signing


async def test_evm_sweep_is_type0_and_a_replacement_keeps_the_total(base_settings, web3):
    chain = EvmChain("anvil", base_settings.chains["anvil"])
    account, bank = Account.create(), Account.create()
    await web3.provider.make_request("anvil_setBalance", [account.address, hex(ETH // 100)])
    native = chain.asset("ETH")

    async def sign(digest: bytes) -> bytes:
        signature = eth_keys.PrivateKey(account.key).sign_msg_hash(digest)
        return signature.r.to_bytes(32, "big") + signature.s.to_bytes(32, "big") + bytes([signature.v])

    quote = await chain.sweep_quote(TransferIntent(account.address, bank.address, native, 0, sweep=True))
    assert quote.amount + quote.fee == ETH // 100 and quote.fee % GAS == 0
    intent = TransferIntent(account.address, bank.address, native, quote.amount, sweep=True, fee=quote.fee)
    first = await chain.sign_transfer(intent, 0, sign)
    bumped = await chain.sign_transfer(intent, 0, sign, replacing=first)
    assert first.fee_params["type"] == 0 and first.max_fee == quote.fee
    assert bumped.fee_params["gasPrice"] >= first.fee_params["gasPrice"] * 115 // 100
    assert bumped.fee_params["value"] + bumped.max_fee == first.fee_params["value"] + first.max_fee == ETH // 100
    assert await chain.broadcast(bumped) == "accepted"
    for _ in range(50):
        if (status := await chain.transfer_status(intent, [first, bumped])).state.value == "CONFIRMED":
            break
        await asyncio.sleep(0.1)
    assert status.tx_hash == bumped.tx_hash and status.fee_paid == bumped.max_fee
    assert await web3.eth.get_balance(account.address) == 0
    assert await web3.eth.get_balance(bank.address) == bumped.fee_params["value"]
