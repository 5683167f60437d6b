"""Wallets page: each wallet's balance on chain, for operators. Operators do not read users'
wallets through the wallet routes (api/permissions.py), so the console shows what reconciliation
read on chain (GET /v1/admin/reconciliation/{chain}'s report, one per chain) and a form that runs
it now (POST .../runs' own function, CSRF-checked). A USER sees no balances."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from core.settings import EvmChainSettings, Settings
from tests.conftest import ALICE, BOB, fund

OPS_KEY = "dev-ops-key"


@pytest.fixture
def chain_name() -> str:
    return f"evm{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(base_settings: Settings, task_queue: str, chain_name: str) -> Settings:
    """A chain of this test's own on the shared anvil: its report lists only this test's wallets."""
    anvil = base_settings.chains["anvil"]
    assert isinstance(anvil, EvmChainSettings)
    own = EvmChainSettings(chain_id=31337, rpc_url=anvil.rpc_url, finality="depth", confirmations=1, faucet_enabled=True, poll_interval_seconds=0.2)
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, chain_name: own}})


async def _signed_in(api: httpx.AsyncClient, api_key: str) -> str:
    """Signs the client's cookie jar in; returns the session's CSRF token."""
    form = await api.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    signed = await api.post("/console/sign-in", data={"api_key": api_key, "csrf": token.group(1)})
    assert signed.status_code == 303, signed.text
    page = await api.get("/console/wallets")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    return csrf.group(1)


def _section(page: str, chain: str) -> str:
    found = re.search(rf'<section id="balances-{chain}" class="balances">(.*?)</section>', page, re.S)
    assert found is not None, page
    return found.group(1)


async def test_operators_read_each_wallets_balance_on_chain_and_refresh_it(api: httpx.AsyncClient, chain_name: str) -> None:
    created = await api.post("/v1/wallets", json={"chain": chain_name, "label": "payouts"}, headers=ALICE)
    assert created.status_code == 201, created.text
    wallet = created.json()
    await fund(api, wallet, "1.25")

    csrf = await _signed_in(api, OPS_KEY)
    before = _section((await api.get("/console/wallets")).text, chain_name)
    assert "Not reconciled yet." in before and wallet["id"] not in before

    refused = await api.post(f"/console/reconciliation/{chain_name}/runs", data={"csrf": "wrong"})
    assert refused.status_code == 403 and "CSRF_FAILED" in refused.text
    assert "Not reconciled yet." in _section((await api.get("/console/wallets")).text, chain_name)

    ran = await api.post(f"/console/reconciliation/{chain_name}/runs", data={"csrf": csrf})
    assert ran.status_code == 303 and "COMPLETED" in ran.headers["location"], ran.headers
    section = _section((await api.get(ran.headers["location"])).text, chain_name)
    row = re.search(rf'<tr data-wallet="{wallet["id"]}" data-asset="ETH" class="ok">(.*?)</tr>', section, re.S)
    assert row is not None, section
    assert re.search(r'class="num on-chain">1\.25<', row.group(1)) and "payouts" in row.group(1) and wallet["address"] in row.group(1)

    unknown = await api.post("/console/reconciliation/nochain/runs", data={"csrf": csrf})
    assert unknown.status_code == 422 and "UNKNOWN_CHAIN" in unknown.text


async def test_a_user_sees_no_balances(api: httpx.AsyncClient) -> None:
    await _signed_in_as_user(api)
    assert (await api.get("/console/wallets")).status_code == 403


async def _signed_in_as_user(api: httpx.AsyncClient) -> None:
    form = await api.get("/console/sign-in")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    signed = await api.post("/console/sign-in", data={"api_key": BOB["Authorization"].removeprefix("Bearer "), "csrf": token.group(1)})
    assert signed.status_code == 303, signed.text
