"""The tamper-evident audit log: a withdrawal's whole life is in it (who asked, who paused or
approved, each signature, the broadcast, the outcome) as a hash chain; PostgreSQL refuses UPDATE,
DELETE and TRUNCATE; a row edited with plain SQL (a superuser disabling the trigger) is found by
`verify`, over HTTP and with `custody audit verify`, which names the first broken entry."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from db import audit
from tests.conftest import ALICE, create_wallet, custody, fund, random_address, wait_for_status, withdraw

ADMIN = {"Authorization": "Bearer dev-admin-key"}


async def test_a_withdrawal_s_life_is_in_the_audit_log_in_order(api, sessions):
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    accepted = (await withdraw(api, wallet, random_address(), "0.2")).json()
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED"

    page = (await api.get("/v1/audit", params={"object_id": accepted["id"]}, headers=ADMIN)).json()
    actions = [e["action"] for e in reversed(page["entries"])]
    assert actions == [
        "withdrawal.requested",
        "withdrawal.validating",
        "withdrawal.policy_decided",
        "withdrawal.signing",
        "withdrawal.policy_rechecked",
        "withdrawal.signed",
        "withdrawal.broadcasting",
        "withdrawal.broadcast",
        "withdrawal.confirming",
        "withdrawal.completed",
    ], actions
    requested, signed = page["entries"][-1], next(e for e in page["entries"] if e["action"] == "withdrawal.signed")
    assert requested["actor"] == "alice" and requested["details"]["amount"] == str(2 * 10**17)
    assert signed["details"]["tx_hash"] == done["tx_hash"] and signed["actor"] == "system:signer"
    for newer, older in zip(page["entries"], page["entries"][1:], strict=False):
        assert newer["id"] > older["id"]
    verified = (await api.get("/v1/audit/verify", headers=ADMIN)).json()
    assert verified["ok"] and verified["checked"] >= len(actions)
    assert (await api.get("/v1/audit", headers=ALICE)).status_code == 403  # administrators only
    assert (await api.get("/v1/audit", headers={"Authorization": "Bearer dev-ops-key"})).status_code == 403


async def test_a_wallet_s_creation_is_in_the_audit_log_once(api):
    wallet = await create_wallet(api)
    page = (await api.get("/v1/audit", params={"object_id": wallet["id"]}, headers=ADMIN)).json()
    assert [e["action"] for e in page["entries"]] == ["wallet.created"]
    created = page["entries"][0]
    assert created["details"]["address"] == wallet["address"] and created["details"]["owner"] == "alice"


async def test_access_changes_and_failed_logins_are_audited(api):
    created = await api.post(
        "/v1/admin/api-keys", json={"owner": "alice", "name": f"k-{uuid.uuid4().hex[:6]}", "scopes": ["wallets:read"]}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    key_id = created.json()["id"]
    assert (await api.post(f"/v1/admin/api-keys/{key_id}/revoke", headers=ADMIN)).status_code == 200
    assert (await api.get("/v1/wallets", headers={"Authorization": "Bearer not-a-key"})).status_code == 401
    entries = (await api.get("/v1/audit", params={"limit": 50}, headers=ADMIN)).json()["entries"]
    mine = [(e["action"], e["object_id"]) for e in entries]
    assert ("apikey.created", key_id) in mine and ("apikey.revoked", key_id) in mine
    failed = next(e for e in entries if e["action"] == "auth.failed")
    assert failed["object_id"] == "GET /v1/wallets" and failed["details"]["code"] == "UNAUTHORIZED"
    assert "not-a-key" not in str(failed)  # the presented credential is never recorded


async def test_the_table_refuses_to_change_and_verify_names_the_first_edited_entry(sessions, tmp_path, api_url):
    marker = uuid.uuid4().hex
    async with sessions() as session, session.begin():
        # Details with what JSON escapes (the chain's hash is computed by PostgreSQL over the
        # content Python serialized, and verify recomputes it in Python).
        details = {"n": 1, "reason": 'café — «ok» "quoted"', "nested": {"b": [1, "x"], "a": None}}
        first = await audit.append(session, actor="tester", action="test.one", object_type="test", object_id=marker, details=details)
        second = await audit.append(session, actor="tester", action="test.two", object_type="test", object_id=marker, details={"n": 2})
    assert first.id is not None and second.prev_hash == first.hash
    assert first.hash == audit.entry_hash(first.prev_hash, first.at, "tester", "test.one", "test", marker, first.details)
    for statement in (
        f"UPDATE audit_log SET actor = 'mallory' WHERE id = {first.id}",
        f"DELETE FROM audit_log WHERE id = {first.id}",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with sessions() as session, session.begin():
                await session.exec(sa.text(statement))  # type: ignore[call-overload]
    async with sessions() as session:
        assert (await audit.verify(session)).ok

    # Only a superuser disabling the trigger can edit a row; verify then finds it.
    async with sessions() as session, session.begin():
        await session.exec(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"))  # type: ignore[call-overload]
        await session.exec(sa.text(f"UPDATE audit_log SET details = '{{\"n\": 100}}' WHERE id = {first.id}"))  # type: ignore[call-overload]
        await session.exec(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete"))  # type: ignore[call-overload]
    try:
        async with sessions() as session:
            result = await audit.verify(session)
        assert not result.ok and result.first_broken_id == first.id and "edited" in result.reason
        code, out, err = await custody(api_url, "audit", "verify", key="dev-admin-key")
        assert code == 1 and f"BROKEN at entry {first.id}" in err, (out, err)
    finally:
        # Put the row back so the rest of the session's tests see an intact chain.
        async with sessions() as session, session.begin():
            await session.exec(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"))  # type: ignore[call-overload]
            restore = sa.text("UPDATE audit_log SET details = CAST(:details AS jsonb) WHERE id = :id")
            restore = restore.bindparams(details=json.dumps(details), id=first.id)
            await session.exec(restore)  # type: ignore[call-overload]
            await session.exec(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete"))  # type: ignore[call-overload]
    code, out, err = await custody(api_url, "audit", "verify", key="dev-admin-key")
    assert code == 0 and "intact" in out, (out, err)
