"""Stellar in tests (withdrawals, channel accounts, pools, reconciliation): amounts in stroops,
an account's balance and sequence on the devnet, a fresh funded keypair, a channel-set run."""

from __future__ import annotations

import uuid

import httpx
from stellar_sdk import Asset, Keypair, ServerAsync
from temporalio.client import Client

from chains.stellar import parse_stroops
from core.settings import Settings
from devnet.stellar import StellarDevnet
from models.payloads import ChannelSetResult
from workflows.channels import ChannelAccountsWorkflow

XLM = 10_000_000


async def balance(horizon: ServerAsync, account_id: str, asset: Asset | None = None) -> int | None:
    try:
        account = await horizon.accounts().account_id(account_id).call()
    except Exception:  # noqa: BLE001 - NotFoundError: no such account
        return None
    for line in account["balances"]:
        if asset is None and line["asset_type"] == "native":
            return parse_stroops(line["balance"])
        if asset is not None and line.get("asset_code") == asset.code and line.get("asset_issuer") == asset.issuer:
            return parse_stroops(line["balance"])
    return None


async def sequence(horizon: ServerAsync, account_id: str) -> int:
    return int((await horizon.accounts().account_id(account_id).call())["sequence"])


async def friendbot(devnet: StellarDevnet) -> Keypair:
    kp = Keypair.random()
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(devnet.friendbot_url, params={"addr": kp.public_key})).status_code == 200
    return kp


async def run_channels(client: Client, settings: Settings, chain: str, workflow_id: str | None = None) -> ChannelSetResult:
    return await client.execute_workflow(
        ChannelAccountsWorkflow.run, chain, id=workflow_id or f"channels-{chain}-{uuid.uuid4().hex[:6]}", task_queue=settings.task_queue
    )
