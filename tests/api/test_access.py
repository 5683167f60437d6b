"""Access: every route x every role, API key scopes / expiry / revocation / IP allowlist, OIDC
JWTs against a local JWKS, users created on first sight (also concurrently), blocks and freezes
stopping withdrawals in flight before anything is signed, operator holds, and Temporal not being
a back door (a raw client's approve or resume signs nothing)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError

from core.identity import Role
from core.settings import OidcSettings
from db.access import prefix_of
from models.access import ApiKey, User
from models.db import Wallet, utcnow
from models.payloads import OperatorRequest
from tests.conftest import ALICE, api_client, create_wallet, fund, new_identity, random_address, serve_app, wait_for_status, withdraw
from tests.support.oidc import Issuer

OPS = {"Authorization": "Bearer dev-ops-key"}
ADMIN = {"Authorization": "Bearer dev-admin-key"}

PUBLIC, SIGNED_IN = "public", "signed in"
U, A, OP, D = Role.USER, Role.APPROVER, Role.OPERATOR, Role.ADMIN
# Who may call what: written out here, independently of api/permissions.py.
EXPECTED: dict[str, object] = {
    "GET /live": PUBLIC,
    "GET /ready": PUBLIC,
    "POST /codec/encode": PUBLIC,
    "POST /codec/decode": PUBLIC,
    "GET /health": {OP},
    "GET /metrics": {OP},
    "GET /v1/users/me": SIGNED_IN,
    "POST /v1/wallets": {U},
    "GET /v1/wallets": {U},
    "GET /v1/wallets/{wallet_id}": {U},
    "GET /v1/wallets/{wallet_id}/balances": {U},
    "POST /v1/wallets/{wallet_id}/activate": {U},
    "POST /v1/wallets/{wallet_id}/deactivate": {U},
    "POST /v1/wallets/{wallet_id}/fund": {U},
    "POST /v1/wallets/{wallet_id}/trustlines": {U},
    "POST /v1/withdrawals": {U},
    "GET /v1/withdrawals": {U, A, OP},
    "GET /v1/withdrawals/{withdrawal_id}": {U, A, OP},
    "POST /v1/withdrawals/{withdrawal_id}/pause": {U, OP},
    "POST /v1/withdrawals/{withdrawal_id}/resume": {U, OP},
    "POST /v1/withdrawals/{withdrawal_id}/cancel": {U, OP},
    "POST /v1/withdrawals/{withdrawal_id}/retry": {U, OP},
    "POST /v1/withdrawals/{withdrawal_id}/approve": {A},
    "POST /v1/withdrawals/{withdrawal_id}/reject": {A},
    "POST /v1/withdrawals/pause-all": {OP},
    "POST /v1/withdrawals/resume-all": {OP},
    "GET /v1/admin/stats": {OP},
    "GET /v1/admin/reconciliation/{chain}": {OP},
    "POST /v1/admin/reconciliation/{chain}/runs": {OP},
    "GET /v1/pools/{chain}": {OP},
    "POST /v1/pools/{chain}/explorers/lease": {OP},
    "POST /v1/pools/{chain}/explorers/{lease_id}/withdrawals": {OP},
    "POST /v1/pools/{chain}/explorers/{lease_id}/return": {OP},
    "POST /v1/pools/{chain}/rebalance": {OP},
    "GET /v1/channels/{chain}": {OP},
    "POST /v1/channels/{chain}/sync": {OP},
    "GET /v1/audit": {D},
    "GET /v1/audit/verify": {D},
    "GET /v1/policy": {D, OP},
    "PUT /v1/policy": {D},
    "GET /v1/policy/versions": {D, OP},
    "GET /v1/policy/versions/{version}": {D, OP},
    "POST /v1/policy/rules": {D},
    "PUT /v1/policy/rules/{rule_id}": {D},
    "DELETE /v1/policy/rules/{rule_id}": {D},
    "POST /v1/policy/test": {D, OP},
    "GET /v1/address-book": {U, A, OP},
    "POST /v1/address-book": {U},
    "DELETE /v1/address-book/{entry_id}": {U},
    "POST /v1/address-book/{entry_id}/approve": {A},
    "POST /v1/webhooks": {U},
    "GET /v1/webhooks": {U, OP},
    "GET /v1/webhooks/{webhook_id}": {U, OP},
    "DELETE /v1/webhooks/{webhook_id}": {U},
    "GET /v1/webhooks/{webhook_id}/deliveries": {U, OP},
    "GET /v1/webhooks/deliveries/{delivery_id}": {U, OP},
    "POST /v1/webhooks/deliveries/{delivery_id}/redeliver": {U, OP},
    "GET /v1/admin/api-keys": {D},
    "POST /v1/admin/api-keys": {D},
    "POST /v1/admin/api-keys/{key_id}/revoke": {D},
    "GET /v1/admin/users": {D},
    "GET /v1/admin/users/{user_id}": {D},
    "PUT /v1/admin/users/{user_id}": {D},
    "POST /v1/admin/users/{user_id}/block": {D},
    "POST /v1/admin/users/{user_id}/unblock": {D},
    "POST /v1/admin/wallets/{wallet_id}/freeze": {D},
    "POST /v1/admin/wallets/{wallet_id}/unfreeze": {D},
}


def _concrete(path: str) -> str:
    return (
        path.replace("{chain}", "nochain")
        .replace("{wallet_id}", str(uuid.uuid4()))
        .replace("{withdrawal_id}", str(uuid.uuid4()))
        .replace("{lease_id}", str(uuid.uuid4()))
        .replace("{key_id}", str(uuid.uuid4()))
        .replace("{user_id}", f"x-{uuid.uuid4().hex[:8]}")
        .replace("{webhook_id}", str(uuid.uuid4()))
        .replace("{delivery_id}", str(uuid.uuid4()))
        .replace("{version}", "999999")
        .replace("{rule_id}", "r-none")
        .replace("{entry_id}", str(uuid.uuid4()))
    )


async def test_every_route_answers_every_role_as_the_table_says(api, sessions):
    app = api._transport.app
    schema_routes = {f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items() for method in ops}
    routes = sorted(schema_routes | {"GET /metrics"})  # /metrics is the one route kept out of the schema
    assert set(routes) == set(EXPECTED), "classify every route in EXPECTED (and api/permissions.py)"
    identities = {role: (await new_identity(sessions, role))[0] for role in Role}
    for route in routes:
        method, path = route.split(" ", 1)
        url = _concrete(path)
        kwargs = {"json": {}} if method in ("POST", "PUT") else {}
        anonymous = await api.request(method, url, **kwargs)
        if EXPECTED[route] == PUBLIC:
            assert anonymous.status_code not in (401, 403), (route, anonymous.text)
            continue
        assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "UNAUTHORIZED", (route, anonymous.text)
        for role, headers in identities.items():
            response = await api.request(method, url, headers=headers, **kwargs)
            allowed = EXPECTED[route] == SIGNED_IN or role in EXPECTED[route]  # type: ignore[operator]
            if allowed:
                assert response.status_code not in (401, 403), (route, role, response.text)
            else:
                assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN", (route, role, response.text)


async def test_key_scopes_narrow_what_a_user_may_do_and_keys_are_shown_once(api, sessions):
    reader, _ = await new_identity(sessions, Role.USER, scopes=["wallets:read"])
    assert (await api.get("/v1/wallets", headers=reader)).status_code == 200
    refused = await api.post("/v1/wallets", json={"chain": "anvil"}, headers=reader)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"

    _, user_id = await new_identity(sessions, Role.USER)
    beyond = await api.post("/v1/admin/api-keys", json={"owner": user_id, "name": "x", "scopes": ["operations"]}, headers=ADMIN)
    assert beyond.status_code == 422 and "needs a role" in beyond.json()["error"]["message"]
    created = await api.post("/v1/admin/api-keys", json={"owner": user_id, "name": "laptop"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith(body["prefix"] + "_") and body["scopes"] == ["wallets:read", "wallets:write", "withdrawals:write"]
    listed = (await api.get(f"/v1/admin/api-keys?owner={user_id}", headers=ADMIN)).json()["items"]
    assert body["id"] in [k["id"] for k in listed] and all("key" not in k and "key_hash" not in k for k in listed)
    async with sessions() as session:
        stored = await session.get(ApiKey, body["id"])
    assert stored is not None and body["key"] not in (stored.key_hash, stored.prefix)
    me = (await api.get("/v1/users/me", headers={"Authorization": f"Bearer {body['key']}"})).json()
    assert me["id"] == user_id and me["roles"] == ["USER"] and me["via"] == f"api_key:{body['prefix']}"


async def test_expired_revoked_and_ip_refused_keys(api, sessions, settings, client):
    expiring, _ = await new_identity(sessions, Role.USER, expires_at=utcnow() + timedelta(days=1))
    assert (await api.get("/v1/wallets", headers=expiring)).status_code == 200
    prefix = prefix_of(expiring["Authorization"].split()[1])
    async with sessions() as session, session.begin():
        key = (await session.exec(select(ApiKey).where(ApiKey.prefix == prefix))).one()
        assert key.last_used_at is not None and key.last_used_ip == "127.0.0.1"
        key.expires_at = utcnow() - timedelta(seconds=1)
        session.add(key)
    expired = await api.get("/v1/wallets", headers=expiring)
    assert expired.status_code == 401 and expired.json()["error"]["message"] == "API key expired"

    revocable, _ = await new_identity(sessions, Role.USER)
    async with sessions() as session:
        key_id = (await session.exec(select(ApiKey.id).where(ApiKey.prefix == prefix_of(revocable["Authorization"].split()[1])))).one()
    assert (await api.post(f"/v1/admin/api-keys/{key_id}/revoke", headers=ADMIN)).json()["revoked_by"] == "admin"
    revoked = await api.get("/v1/wallets", headers=revocable)
    assert revoked.status_code == 401 and revoked.json()["error"]["message"] == "API key revoked"

    office, _ = await new_identity(sessions, Role.USER, ip_allowlist=["10.20.0.0/16"])
    assert (await api.get("/v1/wallets", headers=office)).status_code == 403  # from 127.0.0.1
    app = api._transport.app
    inside = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.20.3.4", 5000)), base_url="http://custody.test")
    async with inside:
        assert (await inside.get("/v1/wallets", headers=office)).status_code == 200


# --- OIDC ----------------------------------------------------------------------------------
@pytest.fixture
async def issuer():  # type: ignore[no-untyped-def]
    issuer = Issuer()
    async with serve_app(issuer.app, port=issuer.port):  # on the port its tokens name as their issuer
        yield issuer


@pytest.fixture
def oidc_settings(settings, issuer):  # type: ignore[no-untyped-def]
    return settings.model_copy(
        update={
            "oidc": OidcSettings(issuer=issuer.url, audience="custody", role_map={"custody-approver": "APPROVER"}),
            "default_wallet_chains": ["anvil"],
        }
    )


async def test_oidc_tokens_good_expired_wrong_audience_and_unknown_key(oidc_settings, client, worker, issuer):
    async with api_client(oidc_settings, client) as api:
        sub = f"kc-{uuid.uuid4()}"
        bearer = {"Authorization": f"Bearer {issuer.token(sub, roles=['user', 'custody-approver', 'offline_access'])}"}
        me = await api.get("/v1/users/me", headers=bearer)
        assert me.status_code == 200, me.text
        assert me.json()["id"] == sub and me.json()["roles"] == ["APPROVER", "USER"] and me.json()["via"] == f"oidc:{issuer.url}"
        assert (await api.get("/v1/wallets", headers=bearer)).status_code == 200
        assert (await api.get("/v1/admin/stats", headers=bearer)).status_code == 403

        cases = {
            "token expired": issuer.token(sub, expires_in=-120),  # past the 30 s leeway
            "token is for another audience": issuer.token(sub, audience="someone-else"),
            "token signed with a key the issuer does not publish": issuer.token(
                sub, key=rsa.generate_private_key(public_exponent=65537, key_size=2048), kid="k-unknown"
            ),
        }
        for message, token in cases.items():
            refused = await api.get("/v1/wallets", headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 401 and refused.json()["error"]["message"] == message, refused.text
        forged = issuer.token(sub, key=rsa.generate_private_key(public_exponent=65537, key_size=2048))  # right kid, wrong key
        assert (await api.get("/v1/wallets", headers={"Authorization": f"Bearer {forged}"})).status_code == 401
        # API keys keep working next to OIDC.
        assert (await api.get("/v1/wallets", headers=ALICE)).status_code == 200


async def test_two_concurrent_first_calls_make_one_user_and_one_default_wallet(oidc_settings, client, worker, issuer, sessions):
    async with api_client(oidc_settings, client) as api:
        sub = f"kc-{uuid.uuid4()}"
        bearer = {"Authorization": f"Bearer {issuer.token(sub)}"}
        first, second = await asyncio.gather(api.get("/v1/users/me", headers=bearer), api.get("/v1/users/me", headers=bearer))
        assert first.status_code == second.status_code == 200, (first.text, second.text)
        [wallet_id] = {w["id"] for w in first.json()["default_wallets"]} | {w["id"] for w in second.json()["default_wallets"]}
        async with sessions() as session:
            users = (await session.exec(select(User).where(User.id == sub))).all()
            wallets = (await session.exec(select(Wallet).where(Wallet.owner == sub))).all()
        assert len(users) == 1 and users[0].oidc_issuer == issuer.url and users[0].oidc_subject == sub
        assert [w.id for w in wallets] == [wallet_id] and wallets[0].label == "default" and wallets[0].chain == "anvil"
        for _ in range(100):  # the invisible wallet's workflow makes its key
            wallet = (await api.get(f"/v1/wallets/{wallet_id}", headers=bearer)).json()
            if wallet["status"] == "ACTIVE":
                break
            await asyncio.sleep(0.1)
        assert wallet["status"] == "ACTIVE" and wallet["address"].startswith("0x")
        again = await api.get("/v1/users/me", headers=bearer)
        assert [w["id"] for w in again.json()["default_wallets"]] == [wallet_id]


# --- blocks, freezes, holds, raw Temporal -------------------------------------------------------
@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "1"}, "approval_timeout_seconds": 600})


async def _awaiting_approval(api, headers=ALICE) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    wallet = await create_wallet(api, headers=headers)
    await fund(api, wallet, "3", headers=headers)
    accepted = await withdraw(api, wallet, random_address(), "1.5", headers=headers)
    assert accepted.status_code == 202, accepted.text
    await wait_for_status(api, accepted.json()["id"], {"AWAITING_APPROVAL"}, headers=headers)
    return wallet, accepted.json()


async def _nothing_signed(api, withdrawal_id: str, code: str, headers=ALICE) -> None:  # type: ignore[no-untyped-def]
    done = await wait_for_status(api, withdrawal_id, {"COMPLETED", "FAILED", "CANCELLED"}, headers=headers)
    assert done["status"] == "FAILED" and done["error_code"] == code, done
    assert done["attempts"] == [] and done["tx_hash"] is None and done["nonce"] is None


async def test_a_frozen_wallet_stops_a_withdrawal_in_flight_before_signing(api):
    wallet, withdrawal = await _awaiting_approval(api)
    frozen = await api.post(f"/v1/admin/wallets/{wallet['id']}/freeze", json={"reason": "court order"}, headers=ADMIN)
    assert frozen.status_code == 200 and frozen.json()["frozen_at"]
    refused = await withdraw(api, wallet, random_address(), "0.1")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "WALLET_FROZEN"
    # The owner cannot thaw it by toggling it.
    await api.post(f"/v1/wallets/{wallet['id']}/deactivate", headers=ALICE)
    assert (await api.post(f"/v1/wallets/{wallet['id']}/activate", headers=ALICE)).json()["frozen_at"] is not None
    assert (await api.post(f"/v1/withdrawals/{withdrawal['id']}/approve", json={}, headers=OPS)).status_code == 200
    await _nothing_signed(api, withdrawal["id"], "WALLET_FROZEN")
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert next(b for b in balances["balances"] if b["asset"] == "ETH")["reserved"] == "0"
    await api.post(f"/v1/admin/wallets/{wallet['id']}/unfreeze", headers=ADMIN)
    assert (await withdraw(api, wallet, random_address(), "0.1")).status_code == 202


async def test_a_blocked_user_can_read_but_nothing_of_theirs_is_signed(api, sessions):
    carol, carol_id = await new_identity(sessions, Role.USER)
    wallet, withdrawal = await _awaiting_approval(api, headers=carol)
    blocked = await api.post(f"/v1/admin/users/{carol_id}/block", json={"reason": "fraud review"}, headers=ADMIN)
    assert blocked.status_code == 200 and blocked.json()["status"] == "BLOCKED" and blocked.json()["blocked_by"] == "admin"
    refused = await withdraw(api, wallet, random_address(), "0.1", headers=carol)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "USER_BLOCKED"
    assert (await api.get("/v1/wallets", headers=carol)).status_code == 200
    assert (await api.post(f"/v1/withdrawals/{withdrawal['id']}/approve", json={}, headers=OPS)).status_code == 200
    await _nothing_signed(api, withdrawal["id"], "USER_BLOCKED", headers=carol)
    await api.post(f"/v1/admin/users/{carol_id}/unblock", headers=ADMIN)
    assert (await withdraw(api, wallet, random_address(), "0.1", headers=carol)).status_code == 202


async def test_a_wallet_deactivated_after_validation_signs_nothing(api):
    wallet, withdrawal = await _awaiting_approval(api)
    assert (await api.post(f"/v1/wallets/{wallet['id']}/deactivate", headers=ALICE)).json()["status"] == "INACTIVE"
    assert (await api.post(f"/v1/withdrawals/{withdrawal['id']}/approve", json={}, headers=OPS)).status_code == 200
    await _nothing_signed(api, withdrawal["id"], "WALLET_INACTIVE")


async def _pending_failure(client, withdrawal_id: str, activity: str, code: str) -> None:  # type: ignore[no-untyped-def]
    """Poll the workflow until `activity` is pending and its last failure has this type."""
    handle = client.get_workflow_handle(f"withdrawal-{withdrawal_id}")
    for _ in range(300):
        pending = (await handle.describe()).raw_description.pending_activities
        if any(p.activity_type.name == activity and p.last_failure.application_failure_info.type == code for p in pending):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{activity} never failed with {code}: {pending}")


async def test_only_an_operator_lifts_an_operators_pause_and_a_raw_resume_signs_nothing(api, client):
    wallet, withdrawal = await _awaiting_approval(api)
    wid = withdrawal["id"]
    assert (await api.post(f"/v1/withdrawals/{wid}/pause", json={"reason": "aml check"}, headers=OPS)).status_code == 200
    refused = await api.post(f"/v1/withdrawals/{wid}/resume", json={}, headers=ALICE)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    assert (await api.post(f"/v1/withdrawals/{wid}/approve", json={}, headers=OPS)).status_code == 200
    # Straight to Temporal (with the payload key, even): the workflow's own pause is lifted, but
    # the operator's hold in the database keeps the signing step waiting.
    await client.get_workflow_handle(f"withdrawal-{wid}").signal("resume", OperatorRequest(by="ops"))
    await _pending_failure(client, wid, "sign_and_broadcast_transfer", "ON_HOLD")
    body = (await api.get(f"/v1/withdrawals/{wid}", headers=ALICE)).json()
    assert body["status"] == "SIGNING" and body["attempts"] == []
    assert (await api.post(f"/v1/withdrawals/{wid}/resume", json={}, headers=OPS)).status_code == 200
    done = await wait_for_status(api, wid, {"COMPLETED", "FAILED", "CANCELLED"}, timeout=90)
    assert done["status"] == "COMPLETED" and len(done["attempts"]) == 1


async def test_an_owners_own_pause_is_lifted_by_the_owner(api):
    wallet, withdrawal = await _awaiting_approval(api)
    wid = withdrawal["id"]
    assert (await api.post(f"/v1/withdrawals/{wid}/pause", json={}, headers=ALICE)).json()["paused"] is True
    assert (await api.post(f"/v1/withdrawals/{wid}/resume", json={}, headers=ALICE)).json()["paused"] is False


async def test_pause_all_holds_survive_owners(api, settings):
    wallet, withdrawal = await _awaiting_approval(api)
    paused = await api.post(
        "/v1/withdrawals/pause-all", json={"chain": "anvil", "reason": "incident", "task_queue": settings.task_queue}, headers=OPS
    )
    assert paused.status_code == 200 and paused.json()["count"] == 1
    refused = await api.post(f"/v1/withdrawals/{withdrawal['id']}/resume", json={}, headers=ALICE)
    assert refused.status_code == 403 and "only an operator" in refused.json()["error"]["message"]
    resumed = await api.post("/v1/withdrawals/resume-all", json={"chain": "anvil", "task_queue": settings.task_queue}, headers=OPS)
    assert resumed.json()["count"] == 1
    for _ in range(100):  # a signal: the workflow records the resume a moment later
        body = (await api.get(f"/v1/withdrawals/{withdrawal['id']}", headers=ALICE)).json()
        if not body["paused"]:
            break
        await asyncio.sleep(0.1)
    assert body["paused"] is False


async def test_a_raw_temporal_client_sending_approve_gets_nothing_signed(api, client, temporal_env):
    _, withdrawal = await _awaiting_approval(api)
    wid = withdrawal["id"]
    # Without the payload keys: the worker refuses the unencrypted update outright.
    plain = temporal_env.client.get_workflow_handle(f"withdrawal-{wid}")
    with pytest.raises(WorkflowUpdateFailedError):
        await plain.execute_update("approve", {"by": "anyone", "reason": ""})
    await plain.signal("pause", {"by": "anyone", "reason": ""})  # dropped, not obeyed
    body = (await api.get(f"/v1/withdrawals/{wid}", headers=ALICE)).json()
    assert body["status"] == "AWAITING_APPROVAL" and body["approved_by"] is None
    # With the keys: the workflow moves on, but no approval was recorded by the API, so the
    # signing step refuses and the withdrawal fails with nothing signed.
    await client.get_workflow_handle(f"withdrawal-{wid}").execute_update("approve", OperatorRequest(by="ops"))
    await _nothing_signed(api, wid, "APPROVAL_NOT_RECORDED")
    assert (await api.get(f"/v1/withdrawals/{wid}", headers=ALICE)).json()["paused"] is False


async def test_an_approval_through_the_api_is_recorded_with_its_identity(api, sessions):
    from models.access import WithdrawalAction

    _, withdrawal = await _awaiting_approval(api)
    assert (await api.post(f"/v1/withdrawals/{withdrawal['id']}/approve", json={"reason": "ok"}, headers=OPS)).status_code == 200
    done = await wait_for_status(api, withdrawal["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED"
    async with sessions() as session:
        [action] = (await session.exec(select(WithdrawalAction).where(WithdrawalAction.withdrawal_id == withdrawal["id"]))).all()
    assert (action.action, action.actor, action.state, action.via) == ("APPROVE", "ops", "ACCEPTED", "api_key:dev-ops-")
    assert "APPROVER" in action.actor_roles


async def test_production_refuses_to_start_while_a_dev_key_is_active(settings, client):
    production = settings.model_copy(update={"environment": "production"})
    with pytest.raises(RuntimeError, match="development API keys are active"):
        async with api_client(production, client):
            pass


async def test_users_roles_and_blocks_are_managed_by_admins(api):
    user_id = f"dave-{uuid.uuid4().hex[:6]}"
    created = await api.put(f"/v1/admin/users/{user_id}", json={"roles": ["USER", "APPROVER"]}, headers=ADMIN)
    assert created.status_code == 200 and created.json()["roles"] == ["APPROVER", "USER"]
    bad = await api.put(f"/v1/admin/users/{user_id}", json={"roles": ["ROOT"]}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
    assert user_id in [u["id"] for u in (await api.get("/v1/admin/users", headers=ADMIN)).json()["items"]]
    missing = await api.post("/v1/admin/api-keys", json={"owner": f"nobody-{uuid.uuid4().hex[:6]}", "name": "k"}, headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "USER_NOT_FOUND"
