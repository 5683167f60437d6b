"""Solana withdrawals end to end: API -> Temporal workflow -> activities -> the LiteSVM devnet.

The devnet ticks (100 ms slots, so a blockhash lives ~15 s); lost sends and expiry are forced
with its control methods. Every test checks that exactly one transfer reached the destination.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to_checked,
)
from spl.token.models import MintToCheckedParams
from temporalio.client import Client

from chains.base import OnChainState
from core.settings import Settings, SolanaChainSettings, TokenSettings
from devnet.solana import SolanaDevnet
from models.payloads import ConfirmationResult
from tests.conftest import ALICE, SOL, replay_and_record, send_signed, wait_for_status

TOKEN_DECIMALS = 6


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def devnet(solana_devnet: SolanaDevnet) -> SolanaDevnet:
    """This module's devnet is conftest's Solana one (its `rpc`, `mint` and `mint_authority` too)."""
    return solana_devnet


@pytest.fixture
def settings(base_settings: Settings, task_queue: str, devnet: SolanaDevnet, mint: Pubkey) -> Settings:
    """conftest's `worker` and `api` fixtures build on this: the stack with a `solana` chain."""
    solana = SolanaChainSettings(
        rpc_url=devnet.url,
        faucet_enabled=True,
        tokens={"TUSD": TokenSettings(address=str(mint), decimals=TOKEN_DECIMALS)},
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=1,
    )
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": {**base_settings.chains, "solana": solana}})


# ----------------------------------------------------------------------------- helpers


async def create_wallet(api: httpx.AsyncClient) -> dict:
    response = await api.post("/v1/wallets", json={"chain": "solana", "label": f"sol-{uuid.uuid4().hex[:8]}"}, headers=ALICE)
    assert response.status_code == 201, response.text
    wallet = response.json()
    assert wallet["status"] == "ACTIVE" and wallet["chain"] == "solana"
    key = Pubkey.from_string(wallet["address"])  # base58 of the ed25519 public key
    assert str(key) == wallet["address"] and key.is_on_curve()
    return wallet


async def fund(api: httpx.AsyncClient, wallet: dict, amount: str) -> None:
    response = await api.post(f"/v1/wallets/{wallet['id']}/fund", json={"amount": amount}, headers=ALICE)
    assert response.status_code == 200, response.text
    assert Signature.from_string(response.json()["tx_hash"])


async def withdraw(api: httpx.AsyncClient, wallet: dict, to: str, amount: str, asset: str = "SOL", memo: dict | None = None) -> httpx.Response:
    body = {"wallet_id": wallet["id"], "to": to, "asset": asset, "amount": amount} | ({"memo": memo} if memo else {})
    return await api.post("/v1/withdrawals", json=body, headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex})


async def lamports(rpc: AsyncClient, address: str | Pubkey) -> int:
    return (await rpc.get_balance(Pubkey.from_string(str(address)), Confirmed)).value


async def landed(rpc: AsyncClient, tx_hash: str) -> bool:
    status = (await rpc.get_signature_statuses([Signature.from_string(tx_hash)], search_transaction_history=True)).value
    return status[0] is not None


async def wait_for(predicate, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


# ----------------------------------------------------------------------------- flows


async def confirmation_rounds(client: Client, workflow_id: str) -> list[ConfirmationResult]:
    """What each await_confirmation round of the workflow answered, decoded as the worker does."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    rounds = {
        e.event_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "await_confirmation"
    }
    answers = []
    for e in history.events:
        if e.HasField("activity_task_completed_event_attributes") and e.activity_task_completed_event_attributes.scheduled_event_id in rounds:
            [answer] = await client.data_converter.decode(e.activity_task_completed_event_attributes.result.payloads, [ConfirmationResult])
            answers.append(answer)
    return answers


async def test_sol_withdrawal_completes(api: httpx.AsyncClient, rpc: AsyncClient, client: Client) -> None:
    wallet = await create_wallet(api)
    before = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert before["funded"] is False  # no lamports, no account
    await fund(api, wallet, "2")
    destination = str(Keypair().pubkey())

    response = await withdraw(api, wallet, destination, "0.5", memo={"type": "text", "value": "payout 7"})
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert [e["status"] for e in done["history"]] == ["PENDING", "VALIDATING", "SIGNING", "BROADCASTING", "CONFIRMING", "COMPLETED"]
    assert len(done["attempts"]) == 1 and done["nonce"] is None
    assert done["tx_hash"] == done["attempts"][0]["tx_hash"]
    assert done["fee_paid_base_units"] == "5000"  # one signature, no priority fee configured
    assert done["memo"] == {"type": "text", "value": "payout 7"}
    # In a slot soon after the send, the transfer waited for `finalized` (32 slots) within one
    # confirmation round: no round ended on a landed, unfinal transfer after the bump delay (1 s here).
    rounds = await confirmation_rounds(client, done["workflow_id"])
    assert rounds and not [r for r in rounds if r.state == OnChainState.PENDING and r.block_number is not None], rounds

    assert await lamports(rpc, destination) == SOL // 2
    assert await lamports(rpc, wallet["address"]) == 2 * SOL - SOL // 2 - 5_000
    tx = (await rpc.get_transaction(Signature.from_string(done["tx_hash"]), commitment=Confirmed)).value
    assert tx.transaction.meta.err is None
    assert any("payout 7" in line for line in tx.transaction.meta.log_messages)

    after = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()
    assert after["funded"] is True
    balances = after["balances"]
    sol = next(b for b in balances if b["asset"] == "SOL")
    rent0 = (await rpc.get_minimum_balance_for_rent_exemption(0)).value
    assert int(sol["balance_base_units"]) == 2 * SOL - SOL // 2 - 5_000 - rent0 and sol["reserved"] == "0"


async def test_spl_withdrawal_creates_the_recipient_ata(api: httpx.AsyncClient, rpc: AsyncClient, mint: Pubkey, mint_authority: Keypair) -> None:
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    owner = Pubkey.from_string(wallet["address"])
    await send_signed(
        rpc,
        mint_authority,
        [
            create_idempotent_associated_token_account(mint_authority.pubkey(), owner, mint, TOKEN_PROGRAM_ID),
            mint_to_checked(
                MintToCheckedParams(
                    program_id=TOKEN_PROGRAM_ID,
                    mint=mint,
                    dest=get_associated_token_address(owner, mint, TOKEN_PROGRAM_ID),
                    mint_authority=mint_authority.pubkey(),
                    amount=100 * 10**TOKEN_DECIMALS,
                    decimals=TOKEN_DECIMALS,
                )
            ),
        ],
    )
    recipient = Keypair().pubkey()
    recipient_ata = get_associated_token_address(recipient, mint, TOKEN_PROGRAM_ID)
    assert (await rpc.get_account_info(recipient_ata, Confirmed)).value is None

    response = await withdraw(api, wallet, str(recipient), "12.5", asset="TUSD")
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert len(done["attempts"]) == 1

    assert (await rpc.get_token_account_balance(recipient_ata, Confirmed)).value.amount == "12500000"
    balances = (await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)).json()["balances"]
    tusd = next(b for b in balances if b["asset"] == "TUSD")
    assert tusd["balance"] == "87.5" and tusd["reserved"] == "0"
    # the wallet paid the fee and the new token account's rent, nothing else
    ata_rent = (await rpc.get_minimum_balance_for_rent_exemption(165)).value
    assert await lamports(rpc, wallet["address"]) == SOL - 5_000 - ata_rent


async def test_insufficient_funds_and_refused_recipients(api: httpx.AsyncClient) -> None:
    wallet = await create_wallet(api)
    await fund(api, wallet, "0.001")  # barely above the rent-exempt minimum (0.00089088 SOL)

    response = await withdraw(api, wallet, str(Keypair().pubkey()), "0.001")
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "FAILED" and done["error_code"] == "INSUFFICIENT_FUNDS", done
    assert done["attempts"] == [] and done["tx_hash"] is None

    # a new account must receive at least the rent-exempt minimum: refused before it is accepted
    response = await withdraw(api, wallet, str(Keypair().pubkey()), "0.0000001")
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "BELOW_ACCOUNT_MINIMUM" and "rent-exempt" in error["message"]
    assert error["details"]["minimum"] == "890880"

    # refused at the door: a program-derived address, a malformed one, a memo kind Solana lacks
    pda, _ = Pubkey.find_program_address([b"vault"], TOKEN_PROGRAM_ID)
    for to, memo, code in [
        (str(pda), None, "INVALID_RECIPIENT"),
        ("0x000000000000000000000000000000000000dEaD", None, "INVALID_RECIPIENT"),
        (str(Keypair().pubkey()), {"type": "id", "value": "42"}, "INVALID_MEMO"),
    ]:
        response = await withdraw(api, wallet, to, "0.0001", memo=memo)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code


async def test_lost_send_is_resent_and_lands_once(api: httpx.AsyncClient, rpc: AsyncClient, devnet: SolanaDevnet, client) -> None:
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    destination = str(Keypair().pubkey())
    await devnet.drop_next_sends(1)  # the node answers with the signature; the leader never sees it

    response = await withdraw(api, wallet, destination, "0.25")
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert len(done["attempts"]) == 1  # the same signed bytes, sent again
    assert done["tx_hash"] in (await devnet.state())["lostSends"]
    assert await lamports(rpc, destination) == SOL // 4
    assert await lamports(rpc, wallet["address"]) == SOL - SOL // 4 - 5_000
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v3_lost_send_sent_again")


async def test_expired_attempt_is_resigned_and_exactly_one_lands(api: httpx.AsyncClient, rpc: AsyncClient, devnet: SolanaDevnet, client) -> None:
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    destination = str(Keypair().pubkey())
    await devnet.drop_next_sends(1_000)  # every send of the first attempt is lost
    try:
        response = await withdraw(api, wallet, destination, "0.1")
        withdrawal_id = response.json()["id"]

        async def first_attempt_lost() -> str | None:
            body = (await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=ALICE)).json()
            if not body["attempts"]:
                return None
            first = body["attempts"][0]["tx_hash"]
            return first if first in (await devnet.state())["lostSends"] else None

        first = await wait_for(first_attempt_lost)
        # the workflow keeps re-sending it; nothing lands while we make its blockhash provably dead
        await devnet.expire_blockhashes()
    finally:
        await devnet.drop_next_sends(0)

    done = await wait_for_status(api, withdrawal_id, {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    attempts = [a["tx_hash"] for a in done["attempts"]]
    assert len(attempts) == 2 and attempts[0] == first, done["attempts"]
    assert done["tx_hash"] == attempts[1]
    assert not await landed(rpc, attempts[0]) and await landed(rpc, attempts[1])
    assert await lamports(rpc, destination) == SOL // 10  # exactly one transfer
    assert await lamports(rpc, wallet["address"]) == SOL - SOL // 10 - 5_000
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v3_resigned_after_expiry")
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v6_resigned_after_expiry")
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v9_resigned_after_expiry")


async def test_cancel_after_broadcast_lets_the_attempt_expire_and_ends_cancelled(
    api: httpx.AsyncClient, rpc: AsyncClient, devnet: SolanaDevnet, client
) -> None:
    """Solana cannot replace a sent transaction: cancel stops the re-sends and the chain decides."""
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    destination = str(Keypair().pubkey())
    await devnet.drop_next_sends(1_000)
    try:
        withdrawal_id = (await withdraw(api, wallet, destination, "0.1")).json()["id"]
        await wait_for_status(api, withdrawal_id, {"CONFIRMING"})
        cancel = await api.post(f"/v1/withdrawals/{withdrawal_id}/cancel", json={"reason": "typo"}, headers=ALICE)
        assert cancel.status_code == 200, cancel.text
        await devnet.expire_blockhashes()
    finally:
        await devnet.drop_next_sends(0)

    done = await wait_for_status(api, withdrawal_id, {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["status"] == "CANCELLED", done
    assert len(done["attempts"]) == 1 and not await landed(rpc, done["attempts"][0]["tx_hash"])
    assert await lamports(rpc, destination) == 0
    await replay_and_record(client, done["workflow_id"], "WithdrawalWorkflow__v3_cancelled_by_expiry")
