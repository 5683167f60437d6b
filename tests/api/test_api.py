"""API edge: authentication, validation codes, idempotency, wallet rules, health."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import ALICE, BOB, create_wallet, fund, random_address, wait_for_status, withdraw


async def test_requests_without_a_valid_api_key_are_refused(api):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic dev-alice-key"}):
        response = await api.get("/v1/wallets", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_same_idempotency_key_returns_the_same_withdrawal_and_a_different_body_conflicts(api, worker):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    destination, key = random_address(), uuid.uuid4().hex
    first = await withdraw(api, wallet, destination, "0.1", key=key)
    again = await withdraw(api, wallet, destination, "0.1", key=key)
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    conflict = await withdraw(api, wallet, destination, "0.2", key=key)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    done = await wait_for_status(api, first.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED"
    listed = (await api.get(f"/v1/withdrawals?wallet_id={wallet['id']}", headers=ALICE)).json()["items"]
    assert [w["id"] for w in listed] == [first.json()["id"]]


@pytest.mark.parametrize(
    ("to", "amount", "asset", "code"),
    [
        ("0x12345", "0.1", "ETH", "INVALID_RECIPIENT"),
        ("not-an-address", "0.1", "ETH", "INVALID_RECIPIENT"),
        ("0x52908400098527886E0F7030069857D2E4169EE7".replace("E", "e", 1), "0.1", "ETH", "INVALID_RECIPIENT"),
        ("0x0000000000000000000000000000000000000000", "0.1", "ETH", "INVALID_RECIPIENT"),
        (None, "0", "ETH", "INVALID_AMOUNT"),
        (None, "-1", "ETH", "INVALID_AMOUNT"),
        (None, "1e3", "ETH", "INVALID_AMOUNT"),
        (None, "0.1234567", "TUSD", "INVALID_AMOUNT"),
        (None, "1", "DOGE", "UNKNOWN_ASSET"),
    ],
)
async def test_bad_withdrawal_requests_get_a_stable_code_and_create_nothing(api, to, amount, asset, code):
    wallet = await create_wallet(api)
    response = await withdraw(api, wallet, to or random_address(), amount, asset=asset)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    listed = (await api.get(f"/v1/withdrawals?wallet_id={wallet['id']}", headers=ALICE)).json()["items"]
    assert listed == []


async def test_lowercase_destination_is_accepted_and_stored_checksummed(api):
    wallet = await create_wallet(api)
    destination = random_address()
    response = await withdraw(api, wallet, destination.lower(), "0.1")
    assert response.status_code == 202
    assert response.json()["to"] == destination


async def test_withdrawal_needs_an_idempotency_key(api):
    wallet = await create_wallet(api)
    response = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": wallet["id"], "to": random_address(), "asset": "ETH", "amount": "1"},
        headers=ALICE,
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_another_owners_wallet_and_withdrawal_are_not_found(api, worker):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    response = await withdraw(api, wallet, random_address(), "0.1", headers=BOB)
    assert response.status_code == 404 and response.json()["error"]["code"] == "WALLET_NOT_FOUND"
    mine = await withdraw(api, wallet, random_address(), "0.1")
    assert (await api.get(f"/v1/withdrawals/{mine.json()['id']}", headers=BOB)).status_code == 404
    assert (await api.get(f"/v1/wallets/{wallet['id']}", headers=BOB)).status_code == 404


async def test_wallet_creation_is_idempotent_and_labels_are_unique_among_active_wallets(api, worker):
    key = uuid.uuid4().hex
    body = {"chain": "anvil", "label": f"ops-{key[:6]}"}
    first = await api.post("/v1/wallets", json=body, headers={**ALICE, "Idempotency-Key": key})
    again = await api.post("/v1/wallets", json=body, headers={**ALICE, "Idempotency-Key": key})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"] and first.json()["address"] == again.json()["address"]

    clash = await api.post("/v1/wallets", json=body, headers=ALICE)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "WALLET_LABEL_TAKEN"
    # Bob may use the same label; Alice may once her first wallet is inactive.
    assert (await api.post("/v1/wallets", json=body, headers=BOB)).status_code == 201
    wallet_id = first.json()["id"]
    assert (await api.post(f"/v1/wallets/{wallet_id}/deactivate", headers=ALICE)).json()["status"] == "INACTIVE"
    second = await api.post("/v1/wallets", json=body, headers=ALICE)
    assert second.status_code == 201 and second.json()["id"] != wallet_id
    reactivate = await api.post(f"/v1/wallets/{wallet_id}/activate", headers=ALICE)
    assert reactivate.status_code == 409 and reactivate.json()["error"]["code"] == "WALLET_LABEL_TAKEN"


async def test_inactive_wallet_cannot_withdraw(api, worker):
    wallet = await create_wallet(api)
    await api.post(f"/v1/wallets/{wallet['id']}/deactivate", headers=ALICE)
    response = await withdraw(api, wallet, random_address(), "0.1")
    assert response.status_code == 409 and response.json()["error"]["code"] == "WALLET_INACTIVE"


async def test_unknown_chain_is_a_validation_error(api):
    response = await api.post("/v1/wallets", json={"chain": "dogecoin"}, headers=ALICE)
    assert response.status_code == 422 and response.json()["error"]["code"] == "UNKNOWN_CHAIN"


async def test_faucet_is_rate_limited_per_wallet_per_day(api, worker, settings):
    wallet = await create_wallet(api)
    for _ in range(settings.faucet_daily_limit):
        await fund(api, wallet, "0.01")
    refused = await api.post(f"/v1/wallets/{wallet['id']}/fund", json={"amount": "0.01"}, headers=ALICE)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "RATE_LIMITED"
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    eth = next(b for b in balances["balances"] if b["asset"] == "ETH")
    assert eth["balance"] == "0.03" and balances["funded"] is True


async def test_readiness_reports_each_dependency(api):
    response = await api.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "redis": "ok", "temporal": "ok"}
    metrics = await api.get("/metrics", headers={"Authorization": "Bearer dev-ops-key"})  # the operations scope
    assert "custody_api_request_duration_seconds" in metrics.text


async def test_memo_is_refused_on_evm_with_its_own_code(api):
    wallet = await create_wallet(api)
    response = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": wallet["id"], "to": random_address(), "asset": "ETH", "amount": "1", "memo": {"type": "text", "value": "invoice 42"}},
        headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "INVALID_MEMO"


async def test_admin_stats_count_volumes_latency_and_failure_reasons(api, worker):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    ok = (await withdraw(api, wallet, random_address(), "0.125")).json()
    bad = (await withdraw(api, wallet, random_address(), "9")).json()
    await wait_for_status(api, ok["id"], {"COMPLETED"})
    await wait_for_status(api, bad["id"], {"FAILED"})
    ops = {"Authorization": "Bearer dev-ops-key"}
    assert (await api.get("/v1/admin/stats", headers=ALICE)).status_code == 403
    stats = (await api.get("/v1/admin/stats", headers=ops)).json()
    completed = next(s for s in stats["by_status"] if s["chain"] == "anvil" and s["asset"] == "ETH" and s["status"] == "COMPLETED")
    assert completed["count"] >= 1 and float(completed["volume"]) >= 0.125
    assert any(r["error_code"] == "INSUFFICIENT_FUNDS" and r["count"] >= 1 for r in stats["failure_reasons"])
    assert 0 < stats["seconds_to_completed_avg"] <= stats["seconds_to_completed_p95"] * 10
    assert any(d["chain"] == "anvil" and d["completed"] >= 1 and d["failed"] >= 1 for d in stats["by_day"])


async def test_paying_another_custody_user_by_handle(api, worker):
    sender = await create_wallet(api)
    await fund(api, sender, "1")
    unknown = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": sender["id"], "to": {"handle": f"nobody-{uuid.uuid4().hex[:6]}"}, "asset": "ETH", "amount": "0.1"},
        headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "RECIPIENT_NOT_FOUND"

    await create_wallet(api, headers=BOB)
    bob_wallets = [w for w in (await api.get("/v1/wallets?chain=anvil", headers=BOB)).json()["items"] if w["status"] == "ACTIVE"]
    expected = sorted(bob_wallets, key=lambda w: (w["label"] != "default", w["created_at"]))[0]
    before = await _eth_balance(api, expected["id"], BOB)
    response = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": sender["id"], "to": {"handle": "bob"}, "asset": "ETH", "amount": "0.1"},
        headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED" and done["owner"] == "alice" and done["recipient_owner"] == "bob"
    assert done["to"] == expected["address"]
    assert await _eth_balance(api, expected["id"], BOB) - before == 10**17


async def _eth_balance(api, wallet_id: str, headers: dict) -> int:  # type: ignore[no-untyped-def]
    balances = (await api.get(f"/v1/wallets/{wallet_id}/balances", headers=headers)).json()["balances"]
    return int(next(b for b in balances if b["asset"] == "ETH")["balance_base_units"])


async def test_a_withdrawal_of_a_chain_no_longer_configured_is_left_out_of_lists(api, worker, sessions):
    """Found by the console's browser test: one row of a chain this deployment no longer
    configures (a test chain of another test, a retired network) made alice's whole list an
    UNKNOWN_CHAIN error. Lists show what they can convert to units; the rest is left out, and
    read by its id, shows its amount in base units only."""
    import sqlalchemy as sa

    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    kept = (await withdraw(api, wallet, random_address(), "0.1")).json()
    retired = (await withdraw(api, wallet, random_address(), "0.1")).json()
    for accepted in (kept, retired):
        await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"})
    async with sessions() as session, session.begin():
        await session.exec(sa.text("UPDATE withdrawals SET chain = 'retired-net' WHERE id = :id").bindparams(id=retired["id"]))  # type: ignore[call-overload]
    listed = await api.get("/v1/withdrawals", params={"wallet_id": wallet["id"]}, headers=ALICE)
    assert listed.status_code == 200, listed.text
    assert [w["id"] for w in listed.json()["items"]] == [kept["id"]]
    # Read by its id it is all there, in base units: it exists, the request is valid (was 422 UNKNOWN_CHAIN).
    alone = await api.get(f"/v1/withdrawals/{retired['id']}", headers=ALICE)
    assert alone.status_code == 200, alone.text
    body = alone.json()
    assert body["chain"] == "retired-net" and body["status"] == "COMPLETED" and body["tx_hash"]
    assert body["amount"] is None and body["amount_base_units"] == str(10**17)


async def test_integer_query_parameters_past_the_columns_are_422_not_500(api):
    """Found by the fuzzer: an offset or a version past PostgreSQL's integer range reached the
    query and failed there (500). Bounded at the edge."""
    admin = {"Authorization": "Bearer dev-admin-key"}
    huge = str(2**70)
    for path, params, headers in (
        ("/v1/withdrawals", {"offset": huge}, ALICE),
        ("/v1/policy/versions", {"before": huge}, admin),
        ("/v1/audit", {"before_id": huge}, admin),
    ):
        answer = await api.get(path, params=params, headers=headers)
        assert answer.status_code == 422 and answer.json()["error"]["code"] == "VALIDATION_ERROR", (path, answer.text)
    assert (await api.get("/v1/withdrawals", params={"offset": str(2**31 - 1)}, headers=ALICE)).status_code == 200


async def test_nul_characters_are_refused_at_the_edge_not_a_500(api):
    """Found by the fuzzer: `action=D%00...` reached PostgreSQL, whose text cannot hold NUL (500)."""
    admin = {"Authorization": "Bearer dev-admin-key"}
    answer = await api.get("/v1/audit", params={"action": "D\x00x"}, headers=admin)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "VALIDATION_ERROR", answer.text
    answer = await api.post("/v1/wallets", content=b'{"chain": "anvil", "label": "a\\u0000b"}', headers={**ALICE, "Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "VALIDATION_ERROR", answer.text
    assert (await api.get("/v1/audit", params={"action": "D"}, headers=admin)).status_code == 200
