"""EVM withdrawals end to end: API -> Temporal workflow -> activities -> real anvil node."""

from __future__ import annotations

import asyncio

from web3 import AsyncHTTPProvider, AsyncWeb3

from tests.conftest import ALICE, api_client, create_wallet, fund, random_address, wait_for_status, withdraw


def web3_for(settings) -> AsyncWeb3:  # type: ignore[no-untyped-def]
    return AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))


async def test_native_withdrawal_completes_and_moves_exactly_the_amount(api, worker, settings):
    wallet = await create_wallet(api)
    await fund(api, wallet, "2")
    destination = random_address()

    response = await withdraw(api, wallet, destination, "0.75")
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "PENDING"
    assert accepted["amount_base_units"] == str(75 * 10**16)

    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert [e["status"] for e in done["history"]] == ["PENDING", "VALIDATING", "SIGNING", "BROADCASTING", "CONFIRMING", "COMPLETED"]
    assert done["nonce"] == 0 and len(done["attempts"]) == 1
    web3 = web3_for(settings)
    assert await web3.eth.get_balance(destination) == 75 * 10**16
    receipt = await web3.eth.get_transaction_receipt(done["tx_hash"])
    assert receipt["status"] == 1 and receipt["from"] == wallet["address"]
    assert int(done["fee_paid_base_units"]) == receipt["gasUsed"] * receipt["effectiveGasPrice"]


def _scheduled_activities(events) -> list[str]:  # type: ignore[no-untyped-def]
    """The server activities a history scheduled, in order."""
    return [e.activity_task_scheduled_event_attributes.activity_type.name for e in events if e.HasField("activity_task_scheduled_event_attributes")]


async def _steps_of_one_withdrawal(api, client) -> tuple[list[str], list[str], list[bytes], int]:  # type: ignore[no-untyped-def]
    """One withdrawal to COMPLETED: its server activities, markers, status upserts, history size."""
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"})
    assert [e["status"] for e in done["history"]] == ["PENDING", "VALIDATING", "SIGNING", "BROADCASTING", "CONFIRMING", "COMPLETED"]
    history = await client.get_workflow_handle(done["workflow_id"]).fetch_history()
    scheduled = _scheduled_activities(history.events)
    markers = [e.marker_recorded_event_attributes.marker_name for e in history.events if e.HasField("marker_recorded_event_attributes")]
    shown = [
        e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields["CustodyStatus"].data
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
        and "CustodyStatus" in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    ]
    return scheduled, markers, shown, len(history.events)


async def test_each_step_records_its_own_status_and_the_short_steps_run_locally(api, worker, client):
    """validate, sign and broadcast record VALIDATING, SIGNING, BROADCASTING and CONFIRMING
    themselves, validation and the policy's decision are one step (issue 14: 82 history events
    -> 48), and validate-and-decide, reserve and finish run as local activities, one marker each
    in the history (48 -> 33); the first attempt is signed and sent by one server activity (33 ->
    25), which also sees it final on this one-block-final anvil: no confirmation activity, and
    the status search attribute goes PENDING -> SIGNING -> COMPLETED (25 -> 18)."""
    scheduled, markers, shown, events = await _steps_of_one_withdrawal(api, client)
    assert scheduled == ["sign_and_broadcast_transfer"]
    assert markers.count("core_local_activity") == 3, markers  # validate-and-decide, reserve, finish
    assert markers.count("core_patch") == 1, markers  # final-in-send-step alone: it implies the others
    assert shown == [b'"SIGNING"', b'"COMPLETED"'], shown
    assert events <= 18, events


async def test_without_a_finality_wait_in_the_send_step_the_confirmation_activity_decides(base_settings, task_queue, client, sessions):
    from worker import build_worker

    anvil = base_settings.chains["anvil"].model_copy(update={"finality_wait_in_send_step_seconds": 0})
    settings = base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, "anvil": anvil}})
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        scheduled, _, shown, events = await _steps_of_one_withdrawal(api, client)
    assert scheduled == ["sign_and_broadcast_transfer", "await_confirmation"]
    assert shown == [b'"SIGNING"', b'"CONFIRMING"', b'"COMPLETED"'], shown
    assert events <= 25, events


async def test_erc20_withdrawal_completes(api, worker, settings):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    await fund(api, wallet, "100", asset="TUSD")
    destination = random_address()

    response = await withdraw(api, wallet, destination, "12.345678", asset="TUSD")
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done

    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    tusd = next(b for b in balances["balances"] if b["asset"] == "TUSD")
    assert tusd["balance"] == "87.654322" and tusd["reserved"] == "0"
    token = web3_for(settings).eth.contract(
        address=settings.chains["anvil"].tokens["TUSD"].address,
        abi=[
            {
                "name": "balanceOf",
                "type": "function",
                "stateMutability": "view",
                "inputs": [{"name": "o", "type": "address"}],
                "outputs": [{"name": "", "type": "uint256"}],
            }
        ],
    )
    assert await token.functions.balanceOf(destination).call() == 12_345_678


async def test_insufficient_funds_fails_with_code_and_releases_nothing_held(api, worker):
    wallet = await create_wallet(api)
    await fund(api, wallet, "0.1")
    response = await withdraw(api, wallet, random_address(), "0.1")  # no room left for the fee
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "FAILED"
    assert done["error_code"] == "INSUFFICIENT_FUNDS"
    assert done["attempts"] == [] and done["tx_hash"] is None


async def test_twenty_concurrent_withdrawals_get_consecutive_nonces_and_all_land(api, worker, settings):
    wallet = await create_wallet(api)
    await fund(api, wallet, "5")
    destinations = [random_address() for _ in range(20)]
    responses = await asyncio.gather(*(withdraw(api, wallet, d, "0.01") for d in destinations))
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
    finals = await asyncio.gather(*(wait_for_status(api, r.json()["id"], {"COMPLETED", "FAILED"}, timeout=120) for r in responses))
    assert [f["status"] for f in finals] == ["COMPLETED"] * 20, [f["error_code"] for f in finals]
    assert sorted(f["nonce"] for f in finals) == list(range(20))
    web3 = web3_for(settings)
    assert await web3.eth.get_transaction_count(wallet["address"]) == 20
    for destination in destinations:
        assert await web3.eth.get_balance(destination) == 10**16


async def test_signers_queued_on_one_sender_do_not_starve_the_connection_pool(base_settings, task_queue, client, sessions):
    """Signing is serialized per sender. Waiters must queue without holding database
    connections, or the holder cannot get the one its keystore read needs: with a pool of two,
    eight concurrent withdrawals from one wallet all sign on their first attempt."""
    from sqlalchemy.ext.asyncio import create_async_engine
    from temporalio.api.enums.v1 import EventType

    from db.engine import create_session_factory
    from tests.conftest import api_client
    from worker import build_worker

    settings = base_settings.model_copy(update={"task_queue": task_queue})
    tight = create_async_engine(settings.database_url, pool_size=2, max_overflow=0, pool_timeout=3)
    try:
        async with build_worker(client, settings, create_session_factory(tight)), api_client(settings, client) as api:
            wallet = await create_wallet(api)
            await fund(api, wallet, "1")
            responses = await asyncio.gather(*(withdraw(api, wallet, random_address(), "0.01") for _ in range(8)))
            finals = await asyncio.gather(*(wait_for_status(api, r.json()["id"], {"COMPLETED", "FAILED"}, timeout=120) for r in responses))
            assert [f["status"] for f in finals] == ["COMPLETED"] * 8
            for final in finals:
                history = await client.get_workflow_handle(final["workflow_id"]).fetch_history()
                attempts = [
                    e.activity_task_started_event_attributes.attempt
                    for e in history.events
                    if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                ]
                assert attempts and max(attempts) == 1, f"an activity was retried: {attempts}"
    finally:
        await tight.dispose()


async def test_a_failed_look_after_the_send_leaves_confirming_to_the_confirmation_step(base_settings, task_queue, client, sessions):
    """The send step's finality look is a courtesy: the node failing it must not fail the step
    (its retry would send the same bytes again for nothing); await_confirmation looks instead."""
    from devnet.faultproxy import FaultProxy
    from worker import build_worker

    with FaultProxy(base_settings.chains["anvil"].rpc_url) as proxy:
        anvil = base_settings.chains["anvil"].model_copy(update={"rpc_url": proxy.url})
        settings = base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, "anvil": anvil}})
        async with build_worker(client, settings, sessions), api_client(settings, client) as api:
            wallet = await create_wallet(api)
            await fund(api, wallet, "1")
            # The first receipts asked for are the look's, right after the send: web3 tries a
            # read six times (five retries) before the adapter hears of the failure.
            proxy.add(action="error", status=503, rpc_method="eth_getTransactionReceipt", count=6)
            accepted = (await withdraw(api, wallet, random_address(), "0.1")).json()
            done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"})
        assert done["status"] == "COMPLETED", done
        assert proxy.injected("error") == 6
        assert proxy.seen("eth_sendRawTransaction") == 1  # sent once: the step was not retried
    events = (await client.get_workflow_handle(done["workflow_id"]).fetch_history()).events
    assert _scheduled_activities(events) == ["sign_and_broadcast_transfer", "await_confirmation"]
    attempts = [e.activity_task_started_event_attributes.attempt for e in events if e.HasField("activity_task_started_event_attributes")]
    assert attempts[0] == 1, attempts
