"""Key pools on Solana (LiteSVM devnet): an explorer that received SPL tokens is recovered into its
bank with its token account emptied and closed first and every lamport moved: zero left."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import create_idempotent_associated_token_account, get_associated_token_address, mint_to_checked
from spl.token.models import MintToCheckedParams

from core.settings import PoolSettings, SolanaChainSettings, TokenSettings
from devnet.solana import SolanaDevnet
from tests.conftest import OPS, SOL, TOKEN_DECIMALS, send_signed, wait_for_status
from tests.support.pools import approve, keys_of, rebalance, show, withdrawal


@pytest.fixture(scope="module")
def devnet(solana_devnet: SolanaDevnet) -> SolanaDevnet:
    """This module's devnet is conftest's Solana one (its `rpc`, `mint` and `mint_authority` too)."""
    return solana_devnet


@pytest.fixture
def chain() -> str:
    return f"sol{uuid.uuid4().hex[:8]}"


@pytest.fixture
def settings(base_settings, task_queue, chain, devnet, mint):  # type: ignore[no-untyped-def]
    solana = SolanaChainSettings(
        rpc_url=devnet.url,
        tokens={"TUSD": TokenSettings(address=str(mint), decimals=TOKEN_DECIMALS)},
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=1,
    )
    pool = PoolSettings(
        min_available_explorers=1,
        explorers_to_create=2,
        explorer_target_balance="0.05",
        bank_target_balance="0.5",
        hodl_auto_approve_up_to="0",
        rebalance_interval_seconds=3600,
    )
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, chain: solana}, "pools": {chain: pool}})


async def lamports(rpc: AsyncClient, address: str | Pubkey) -> int:
    return (await rpc.get_balance(Pubkey.from_string(str(address)), Confirmed)).value


async def test_recovery_closes_token_accounts_and_leaves_zero_lamports(api, client, settings, chain, rpc, mint, mint_authority):
    assert (await rebalance(client, settings, chain)).status == "COMPLETED"
    pool = await show(api, chain)
    hodl, bank = keys_of(pool, "hodl")[0], keys_of(pool, "bank")[0]
    airdrop = await rpc.request_airdrop(Pubkey.from_string(hodl["address"]), 5 * SOL)
    for _ in range(100):
        if (await rpc.get_signature_statuses([airdrop.value])).value[0] is not None:
            break
        await asyncio.sleep(0.05)

    second = await rebalance(client, settings, chain)
    assert len(second.pending_approvals) == 1 and second.explorers_created == 0
    await approve(api, second.pending_approvals[0])
    third = await rebalance(client, settings, chain)
    assert third.explorers_created == 2, third
    for pending in third.pending_approvals:  # the bank is below target again: leave it waiting
        assert (await withdrawal(api, pending))["status"] in ("PENDING", "VALIDATING", "AWAITING_APPROVAL")
    pool = await show(api, chain)
    for explorer in keys_of(pool, "explorer", "AVAILABLE"):
        assert await lamports(rpc, explorer["address"]) == SOL // 20

    leased = (await api.post(f"/v1/pools/{chain}/explorers/lease", headers=OPS)).json()
    explorer = Pubkey.from_string(leased["address"])
    # The explorer received tokens during its transaction (here: minted to its ATA).
    ata = get_associated_token_address(explorer, mint, TOKEN_PROGRAM_ID)
    await send_signed(
        rpc,
        mint_authority,
        [
            create_idempotent_associated_token_account(mint_authority.pubkey(), explorer, mint, TOKEN_PROGRAM_ID),
            mint_to_checked(
                MintToCheckedParams(
                    program_id=TOKEN_PROGRAM_ID,
                    mint=mint,
                    dest=ata,
                    mint_authority=mint_authority.pubkey(),
                    amount=7_000_000,
                    decimals=TOKEN_DECIMALS,
                )
            ),
        ],
    )
    destination = str(Keypair().pubkey())
    used = await api.post(
        f"/v1/pools/{chain}/explorers/{leased['lease_id']}/withdrawals",
        json={"to": destination, "asset": "SOL", "amount": "0.01"},
        headers={**OPS, "Idempotency-Key": "sol-use"},
    )
    assert used.status_code == 202, used.text
    assert (await wait_for_status(api, used.json()["id"], {"COMPLETED", "FAILED"}, headers=OPS))["status"] == "COMPLETED"
    assert (await api.post(f"/v1/pools/{chain}/explorers/{leased['lease_id']}/return", headers=OPS)).status_code == 200

    explorer_lamports = await lamports(rpc, explorer)
    ata_lamports = await lamports(rpc, ata)
    bank_ata = get_associated_token_address(Pubkey.from_string(bank["address"]), mint, TOKEN_PROGRAM_ID)
    assert (await rpc.get_account_info(bank_ata)).value is None
    ata_rent = (await rpc.get_minimum_balance_for_rent_exemption(165)).value
    bank_before = await lamports(rpc, bank["address"])

    fourth = await rebalance(client, settings, chain)
    assert fourth.recovered == 1 and fourth.explorers_created == 0, fourth
    assert await lamports(rpc, explorer) == 0
    assert (await rpc.get_account_info(explorer)).value is None
    assert (await rpc.get_account_info(ata)).value is None  # closed
    balance = (await rpc.get_token_account_balance(bank_ata)).value
    assert int(balance.amount) == 7_000_000
    pool = await show(api, chain)
    recovered = next(k for k in pool["keys"] if k["wallet_id"] == leased["wallet_id"])
    assert recovered["state"] == "RECOVERED"
    sweep = await withdrawal(api, recovered["recovery_withdrawal_id"])
    assert sweep["status"] == "COMPLETED" and sweep["fee_paid_base_units"] == "5000"
    # Everything the explorer and its token account held, minus the signature fee and the rent of
    # the bank's new token account (paid by the explorer), reached the bank.
    assert int(sweep["amount_base_units"]) == explorer_lamports + ata_lamports - 5000 - ata_rent
    assert await lamports(rpc, bank["address"]) == bank_before + int(sweep["amount_base_units"])
    tx = (await rpc.get_transaction(Signature.from_string(sweep["tx_hash"]), commitment=Confirmed)).value
    assert tx.transaction.meta.err is None

    for pending in fourth.pending_approvals:
        await api.post(f"/v1/withdrawals/{pending}/cancel", json={"reason": "test over"}, headers=OPS)
