"""The Solana devnet driven by the real solana-py AsyncClient over HTTP.

Transactions are built and signed with solders, executed by LiteSVM behind the devnet; errors are read
back through solana-py's own parsing (solders RPC types), so what is asserted here is what a client sees.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.core import RPCException
from solana.rpc.models import TokenAccountOpts, TxOpts
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.errors import RpcCustomErrorFieldless
from solders.signature import Signature
from solders.system_program import TransferParams, transfer
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    InstructionErrorCustom,
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
)
from spl.token.constants import TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to_checked,
    transfer_checked,
)
from spl.token.models import MintToCheckedParams, TransferCheckedParams

from devnet.solana import SolanaDevnet, run_solana_devnet
from devnet.solana.codec import b58encode
from tests.support.solana_rpc import (
    CONFIRMED_PREFLIGHT,
    SOL,
    blockhash,
    create_mint,
    funded,
    get_tx,
    preflight_error,
    sign,
    sol_transfer,
    status,
)

FINALIZED_PREFLIGHT = TxOpts(preflight_commitment=Finalized)
SKIP_PREFLIGHT = TxOpts(skip_preflight=True)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[SolanaDevnet]:
    t0 = time.monotonic()
    async with run_solana_devnet(host="127.0.0.1", port=0, slot_ms=0) as d:  # slots move only when told
        assert time.monotonic() - t0 < 2.0, "devnet must start in under 2 s"
        yield d


@pytest.fixture(scope="module")
async def client(devnet: SolanaDevnet) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(devnet.url, commitment=Confirmed) as c:
        yield c


def b64(data: bytes | bytearray | VersionedTransaction) -> str:
    return base64.b64encode(bytes(data)).decode()


RawRpc = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture(scope="module")
async def raw(devnet: SolanaDevnet) -> AsyncIterator[RawRpc]:
    """The wire: one JSON-RPC call, its raw reply (HTTP 200 for errors too, as on Agave)."""
    async with httpx.AsyncClient() as http:

        async def call(method: str, params: Any = None) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": 42, "method": method, "params": params if params is not None else []}
            reply = await http.post(devnet.url, json=body)
            assert reply.status_code == 200
            return reply.json()

        yield call


# ----------------------------------------------------------------------------- basics


async def test_airdrop_balance_and_status(client: AsyncClient) -> None:
    kp = Keypair()
    sig = (await client.request_airdrop(kp.pubkey(), 3 * SOL)).value
    assert (await client.get_balance(kp.pubkey())).value == 3 * SOL
    st = await status(client, sig)
    assert st is not None and st.err is None
    assert st.confirmation_status == TransactionConfirmationStatus.Confirmed
    tx = (await client.get_transaction(sig, commitment=Confirmed)).value
    assert tx is not None and tx.transaction.meta.err is None
    keys = [str(k) for k in tx.transaction.transaction.message.account_keys]
    i = keys.index(str(kp.pubkey()))
    assert tx.transaction.meta.pre_balances[i] == 0 and tx.transaction.meta.post_balances[i] == 3 * SOL


async def test_cluster_info_is_consistent(client: AsyncClient) -> None:
    slot = (await client.get_slot(Confirmed)).value
    height = (await client.get_block_height(Confirmed)).value
    epoch = (await client.get_epoch_info(Confirmed)).value
    assert epoch.absolute_slot == slot and epoch.block_height == height
    assert height < slot  # block height trails the slot, as on mainnet
    finalized_slot = (await client.get_slot(Finalized)).value
    assert finalized_slot == slot - 32
    assert (await client.get_version()).value.solana_core
    assert await client.is_connected()
    assert (await client.get_genesis_hash()).value != Hash.default()
    # rent comes from the SVM's sysvar, identical to a fresh LiteSVM's
    fresh = LiteSVM()
    for size in (0, 82, 165):
        rent = (await client.get_minimum_balance_for_rent_exemption(size)).value
        assert rent == fresh.minimum_balance_for_rent_exemption(size)


async def test_unknown_method_and_invalid_params(raw: RawRpc) -> None:
    assert (await raw("getNothing"))["error"] == {"code": -32601, "message": "Method not found"}
    bad = await raw("getBalance", ["not-a-key"])
    assert bad["error"]["code"] == -32602 and bad["error"]["message"] == "Invalid param: Invalid"
    assert (await raw("getBalance", []))["error"]["code"] == -32602
    assert (await raw("getSignatureStatuses", [["abc"]]))["error"]["message"] == "Invalid param: WrongSize"
    assert (await raw("sendTransaction", ["AQI=", {"encoding": "base64"}]))["error"]["code"] == -32602
    assert bad["id"] == 42 and bad["jsonrpc"] == "2.0"


# ----------------------------------------------------------------------------- SOL transfers and fees


async def test_sol_transfer_fee_is_signature_fee_plus_priority_fee(devnet: SolanaDevnet, client: AsyncClient) -> None:
    payer, dest = await funded(client), Keypair()
    await devnet.advance_slots(1)  # a block of its own: per-slot fee stats take the minimum over the block
    recent, _ = await blockhash(client)
    cu_limit, cu_price = 10_000, 250_000  # micro-lamports per CU
    tx = sign(
        payer,
        [
            set_compute_unit_limit(cu_limit),
            set_compute_unit_price(cu_price),
            transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=dest.pubkey(), lamports=SOL)),
        ],
        recent,
    )
    expected_fee = 5_000 * 1 + -(-cu_price * cu_limit // 1_000_000)
    assert expected_fee == 7_500
    assert (await client.get_fee_for_message(tx.message)).value == expected_fee
    sig = (await client.send_transaction(tx, CONFIRMED_PREFLIGHT)).value
    assert sig == tx.signatures[0]
    await client.confirm_transaction(sig, Confirmed, sleep_seconds=0.05)
    assert (await client.get_balance(payer.pubkey())).value == 10 * SOL - SOL - expected_fee
    assert (await client.get_balance(dest.pubkey())).value == SOL
    meta = await get_tx(client, sig)
    assert meta.transaction.meta.fee == expected_fee
    assert meta.transaction.meta.pre_balances[0] - meta.transaction.meta.post_balances[0] == SOL + expected_fee
    fees = (await client.get_recent_prioritization_fees([payer.pubkey()])).value
    assert any(f.slot == meta.slot and f.prioritization_fee == cu_price for f in fees)


async def test_default_compute_limit_fee_matches_execution(client: AsyncClient) -> None:
    payer = await funded(client)
    recent, _ = await blockhash(client)
    # no explicit limit: builtins reserve 3,000 CU each (compute budget + system) => 6,000 CU at 1 lamport/CU
    tx = sign(
        payer,
        [
            set_compute_unit_price(1_000_000),
            transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=Keypair().pubkey(), lamports=SOL)),
        ],
        recent,
    )
    quoted = (await client.get_fee_for_message(tx.message)).value
    assert quoted == 5_000 + 6_000
    await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    assert (await client.get_balance(payer.pubkey())).value == 10 * SOL - SOL - quoted


async def test_bad_signature_rejected(client: AsyncClient) -> None:
    payer, dest = await funded(client), Keypair()
    recent, _ = await blockhash(client)
    tampered = bytearray(bytes(sol_transfer(payer, dest.pubkey(), SOL, recent)))
    tampered[1 + 10] ^= 0x01  # flip a bit inside the first signature
    with pytest.raises(RPCException) as exc:
        await client.send_raw_transaction(bytes(tampered), CONFIRMED_PREFLIGHT)
    assert exc.value.args[0] == RpcCustomErrorFieldless.TransactionSignatureVerificationFailure
    # without preflight the node accepts it, but sigverify drops it: it never lands
    sig = (await client.send_raw_transaction(bytes(tampered), SKIP_PREFLIGHT)).value
    assert await status(client, sig) is None
    assert (await client.get_balance(payer.pubkey())).value == 10 * SOL
    assert (await client.get_balance(dest.pubkey())).value == 0


async def test_bad_signature_wire_error(raw: RawRpc, client: AsyncClient) -> None:
    payer = await funded(client)
    recent, _ = await blockhash(client)
    tampered = bytearray(bytes(sol_transfer(payer, Keypair().pubkey(), SOL, recent)))
    tampered[5] ^= 0xFF
    reply = await raw("sendTransaction", [b64(tampered), {"encoding": "base64", "preflightCommitment": "confirmed"}])
    assert reply["error"] == {"code": -32003, "message": "Transaction signature verification failure"}


async def test_blockhash_window(raw: RawRpc, devnet: SolanaDevnet, client: AsyncClient) -> None:
    payer = await funded(client)
    old, old_last_valid = await blockhash(client)
    await devnet.advance_slots(5)
    newer, newer_last_valid = await blockhash(client)
    assert newer != old and newer_last_valid == old_last_valid + 5
    # a blockhash from a few slots ago is still accepted
    dest = Keypair()
    await client.send_transaction(sol_transfer(payer, dest.pubkey(), SOL, old), CONFIRMED_PREFLIGHT)
    assert (await client.get_balance(dest.pubkey())).value == SOL
    # an unknown blockhash is refused by preflight with the real error
    with pytest.raises(RPCException) as exc:
        await client.send_transaction(sol_transfer(payer, dest.pubkey(), SOL, Hash.new_unique()), CONFIRMED_PREFLIGHT)
    err = preflight_error(exc)
    assert err.message == "Transaction simulation failed: Blockhash not found"
    assert err.data.err == TransactionErrorFieldless.BlockhashNotFound
    reply = await raw("isBlockhashValid", [str(old), {"commitment": "confirmed"}])
    assert reply["result"]["value"] is True


async def test_blockhash_not_found_wire_format(raw: RawRpc, client: AsyncClient) -> None:
    payer = await funded(client)
    tx = sol_transfer(payer, Keypair().pubkey(), SOL, Hash.new_unique())
    config = {"encoding": "base58", "preflightCommitment": "confirmed"}
    reply = await raw("sendTransaction", [b58encode(bytes(tx)), config])
    error = reply["error"]
    assert error["code"] == -32002
    assert error["message"] == "Transaction simulation failed: Blockhash not found"
    assert error["data"]["err"] == "BlockhashNotFound" and error["data"]["logs"] == []


async def test_confirmed_blockhash_with_finalized_preflight_is_not_found(client: AsyncClient) -> None:
    """A node's finalized bank does not know the tip's blockhash yet (match preflight to the blockhash)."""
    payer = await funded(client)
    recent, _ = await blockhash(client)  # confirmed
    with pytest.raises(RPCException) as exc:
        await client.send_transaction(sol_transfer(payer, Keypair().pubkey(), SOL, recent), FINALIZED_PREFLIGHT)
    assert preflight_error(exc).data.err == TransactionErrorFieldless.BlockhashNotFound
    finalized = (await client.get_latest_blockhash(Finalized)).value
    dest = Keypair()
    await client.send_transaction(sol_transfer(payer, dest.pubkey(), SOL, finalized.blockhash), FINALIZED_PREFLIGHT)
    assert (await client.get_balance(dest.pubkey())).value == SOL


async def test_base58_send_and_send_options(raw: RawRpc, client: AsyncClient) -> None:
    payer, dest = await funded(client), Keypair()
    recent, _ = await blockhash(client)
    tx = sol_transfer(payer, dest.pubkey(), SOL, recent)
    reply = await raw(
        "sendTransaction",
        [b58encode(bytes(tx)), {"skipPreflight": False, "preflightCommitment": "processed", "maxRetries": 0}],
    )
    assert reply["result"] == str(tx.signatures[0])  # default encoding is base58
    assert (await client.get_balance(dest.pubkey())).value == SOL


# ----------------------------------------------------------------------------- duplicates, expiry


async def test_resending_identical_bytes_does_not_double_apply(devnet: SolanaDevnet, client: AsyncClient) -> None:
    payer, dest = await funded(client), Keypair()
    recent, _ = await blockhash(client)
    raw = bytes(sol_transfer(payer, dest.pubkey(), 2 * SOL, recent))
    sig = (await client.send_raw_transaction(raw, CONFIRMED_PREFLIGHT)).value
    with pytest.raises(RPCException) as exc:
        await client.send_raw_transaction(raw, CONFIRMED_PREFLIGHT)
    err = preflight_error(exc)
    assert err.message == "Transaction simulation failed: This transaction has already been processed"
    assert err.data.err == TransactionErrorFieldless.AlreadyProcessed
    assert (await client.send_raw_transaction(raw, SKIP_PREFLIGHT)).value == sig
    await devnet.advance_slots(2)
    assert (await client.send_raw_transaction(raw, SKIP_PREFLIGHT)).value == sig
    assert (await client.get_balance(dest.pubkey())).value == 2 * SOL
    assert (await client.get_balance(payer.pubkey())).value == 10 * SOL - 2 * SOL - 5_000
    st = await status(client, sig)
    assert st.err is None and st.slot == (await get_tx(client, sig)).slot


async def test_expire_blockhashes(raw: RawRpc, devnet: SolanaDevnet, client: AsyncClient) -> None:
    payer = await funded(client)
    recent, last_valid = await blockhash(client)
    tx = sol_transfer(payer, Keypair().pubkey(), SOL, recent)
    state = await devnet.expire_blockhashes()
    height = (await client.get_block_height(Confirmed)).value
    assert state["blockHeight"] == height
    # expiry is proven by the finalized block height passing lastValidBlockHeight
    assert last_valid < (await client.get_block_height(Finalized)).value < height
    reply = await raw("isBlockhashValid", [str(recent), {"commitment": "processed"}])
    assert reply["result"]["value"] is False
    with pytest.raises(RPCException) as exc:
        await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    assert preflight_error(exc).data.err == TransactionErrorFieldless.BlockhashNotFound
    sig = (await client.send_transaction(tx, SKIP_PREFLIGHT)).value  # accepted, never lands
    assert await status(client, sig) is None
    assert (await client.get_balance(payer.pubkey())).value == 10 * SOL
    assert (await client.get_fee_for_message(tx.message)).value is None  # blockhash no longer valid


async def test_finalized_after_32_slots(devnet: SolanaDevnet, client: AsyncClient) -> None:
    payer = await funded(client)
    recent, _ = await blockhash(client)
    tx = sol_transfer(payer, Keypair().pubkey(), SOL, recent)
    sig = (await client.send_transaction(tx, CONFIRMED_PREFLIGHT)).value
    st = await status(client, sig)
    assert st.confirmation_status == TransactionConfirmationStatus.Confirmed and st.confirmations == 0
    assert await get_tx(client, sig, Finalized) is None
    await devnet.advance_slots(31)
    st = await status(client, sig)
    assert st.confirmation_status == TransactionConfirmationStatus.Confirmed and st.confirmations == 31
    await devnet.advance_slots(1)
    st = await status(client, sig)
    assert st.confirmation_status == TransactionConfirmationStatus.Finalized and st.confirmations is None
    assert (await get_tx(client, sig, Finalized)).slot == st.slot
    await client.confirm_transaction(sig, Finalized, sleep_seconds=0.05)


async def test_duplicate_with_finalized_preflight(devnet: SolanaDevnet, client: AsyncClient) -> None:
    """Before finalization the finalized bank cannot see the landed tx: the RPC forwards it and the leader drops it."""
    payer, dest = await funded(client), Keypair()
    recent = (await client.get_latest_blockhash(Finalized)).value.blockhash
    raw = bytes(sol_transfer(payer, dest.pubkey(), SOL, recent))
    sig = (await client.send_raw_transaction(raw, FINALIZED_PREFLIGHT)).value
    assert (await client.send_raw_transaction(raw, FINALIZED_PREFLIGHT)).value == sig
    await devnet.advance_slots(32)
    with pytest.raises(RPCException) as exc:
        await client.send_raw_transaction(raw, FINALIZED_PREFLIGHT)
    assert preflight_error(exc).data.err == TransactionErrorFieldless.AlreadyProcessed
    assert (await client.get_balance(dest.pubkey())).value == SOL


# ----------------------------------------------------------------------------- failures, simulation


async def test_failing_transaction(client: AsyncClient) -> None:
    payer, dest = await funded(client, SOL), Keypair()
    recent, _ = await blockhash(client)
    tx = sol_transfer(payer, dest.pubkey(), 5 * SOL, recent)
    with pytest.raises(RPCException) as exc:
        await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    err = preflight_error(exc)
    assert err.message == "Transaction simulation failed: Error processing Instruction 0: custom program error: 0x1"
    assert any("insufficient lamports" in line for line in err.data.logs)
    assert (await client.get_balance(payer.pubkey())).value == SOL
    # with skipPreflight it lands, fails on chain, and pays the fee
    sig = (await client.send_transaction(tx, SKIP_PREFLIGHT)).value
    st = await status(client, sig)
    assert st.err == TransactionErrorInstructionError(0, InstructionErrorCustom(1))
    assert (await client.get_balance(payer.pubkey())).value == SOL - 5_000
    meta = await get_tx(client, sig)
    assert meta.transaction.meta.err == st.err and meta.transaction.meta.fee == 5_000


async def test_simulate_transaction(raw: RawRpc, client: AsyncClient) -> None:
    payer, dest = await funded(client), Keypair()
    recent, _ = await blockhash(client)
    tx = sol_transfer(payer, dest.pubkey(), SOL, recent)
    sim = (await client.simulate_transaction(tx, sig_verify=True, commitment=Confirmed)).value
    assert sim.err is None and sim.units_consumed > 0 and sim.logs
    assert (await client.get_balance(dest.pubkey())).value == 0  # nothing committed
    # an unsigned transaction with a stale blockhash, simulated with replaceRecentBlockhash
    unsigned = VersionedTransaction.populate(
        MessageV0.try_compile(
            payer.pubkey(),
            [transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=dest.pubkey(), lamports=SOL))],
            [],
            Hash.new_unique(),
        ),
        [Signature.default()],
    )
    config = {
        "encoding": "base64",
        "replaceRecentBlockhash": True,
        "commitment": "confirmed",
        "accounts": {"addresses": [str(dest.pubkey())], "encoding": "base64"},
    }
    reply = await raw("simulateTransaction", [b64(unsigned), config])
    value = reply["result"]["value"]
    assert value["err"] is None and value["replacementBlockhash"]["blockhash"] == str(recent)
    assert value["accounts"][0]["lamports"] == SOL
    stale = await raw("simulateTransaction", [b64(unsigned), {"encoding": "base64"}])
    assert stale["result"]["value"]["err"] == "BlockhashNotFound"


async def test_dropped_send_never_lands(devnet: SolanaDevnet, client: AsyncClient) -> None:
    payer, dest = await funded(client), Keypair()
    recent, _ = await blockhash(client)
    tx = sol_transfer(payer, dest.pubkey(), SOL, recent)
    await devnet.drop_next_sends(1)
    sig = (await client.send_transaction(tx, CONFIRMED_PREFLIGHT)).value
    assert sig == tx.signatures[0]
    await devnet.advance_slots(3)
    assert await status(client, sig) is None
    assert (await client.get_balance(dest.pubkey())).value == 0
    assert str(sig) in (await devnet.state())["lostSends"]
    # the same bytes sent again (still inside the window) do land, once
    assert (await client.send_transaction(tx, CONFIRMED_PREFLIGHT)).value == sig
    assert (await status(client, sig)).err is None
    assert (await client.get_balance(dest.pubkey())).value == SOL


async def test_hold_and_release_sends(devnet: SolanaDevnet, client: AsyncClient) -> None:
    payer, dest = await funded(client), Keypair()
    recent, _ = await blockhash(client)
    await devnet.hold_sends()
    try:
        tx = sol_transfer(payer, dest.pubkey(), SOL, recent)
        sig = (await client.send_transaction(tx, CONFIRMED_PREFLIGHT)).value
        assert await status(client, sig) is None
        assert (await client.get_balance(dest.pubkey())).value == 0
    finally:
        released = await devnet.release_sends()
    assert released == [{"signature": str(sig), "landed": True}]
    assert (await client.get_balance(dest.pubkey())).value == SOL


# ----------------------------------------------------------------------------- SPL tokens


@pytest.mark.parametrize("program", [TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID], ids=["spl-token", "token-2022"])
async def test_spl_create_ata_and_transfer_checked(devnet: SolanaDevnet, client: AsyncClient, program: Pubkey) -> None:
    payer, recipient = await funded(client), Keypair()
    mint = await create_mint(client, payer, program, decimals=6)
    source = get_associated_token_address(payer.pubkey(), mint, program)
    dest = get_associated_token_address(recipient.pubkey(), mint, program)
    recent, _ = await blockhash(client)
    await client.send_transaction(
        sign(
            payer,
            [
                create_idempotent_associated_token_account(payer.pubkey(), payer.pubkey(), mint, program),
                mint_to_checked(
                    MintToCheckedParams(
                        program_id=program,
                        mint=mint,
                        dest=source,
                        mint_authority=payer.pubkey(),
                        amount=5_000_000,
                        decimals=6,
                    )
                ),
            ],
            recent,
        ),
        CONFIRMED_PREFLIGHT,
    )
    # the withdrawal shape: create the recipient's ATA idempotently and transfer_checked, in one transaction
    withdrawal = [
        set_compute_unit_price(1_000),
        create_idempotent_associated_token_account(payer.pubkey(), recipient.pubkey(), mint, program),
        transfer_checked(
            TransferCheckedParams(
                program_id=program,
                source=source,
                mint=mint,
                dest=dest,
                owner=payer.pubkey(),
                amount=1_234_500,
                decimals=6,
            )
        ),
    ]
    sig = (await client.send_transaction(sign(payer, withdrawal, recent), CONFIRMED_PREFLIGHT)).value
    assert (await status(client, sig)).err is None
    balance = (await client.get_token_account_balance(dest, Confirmed)).value
    assert (balance.amount, balance.decimals, balance.ui_amount_string) == ("1234500", 6, "1.2345")
    assert (await client.get_token_account_balance(source, Confirmed)).value.amount == "3765500"
    # running it again (same instructions, new blockhash): the ATA already exists, only the transfer applies
    await devnet.advance_slots(1)
    recent2, _ = await blockhash(client)
    await client.send_transaction(sign(payer, withdrawal, recent2), CONFIRMED_PREFLIGHT)
    assert (await client.get_token_account_balance(dest, Confirmed)).value.amount == "2469000"

    by_mint = (await client.get_token_accounts_by_owner(recipient.pubkey(), TokenAccountOpts(mint=mint), Confirmed)).value
    assert [a.pubkey for a in by_mint] == [dest]
    by_program = (await client.get_token_accounts_by_owner_json_parsed(payer.pubkey(), TokenAccountOpts(program_id=program), Confirmed)).value
    assert [a.pubkey for a in by_program] == [source]
    info = by_program[0].account.data.parsed["info"]
    assert (info["mint"], info["owner"]) == (str(mint), str(payer.pubkey()))
    assert info["tokenAmount"]["amount"] == "2531000"
    parsed = (await client.get_account_info_json_parsed(dest, Confirmed)).value.data
    assert parsed.program == ("spl-token" if program == TOKEN_PROGRAM_ID else "spl-token-2022")
    assert parsed.parsed["type"] == "account" and parsed.parsed["info"]["state"] == "initialized"
    mint_info = (await client.get_account_info_json_parsed(mint, Confirmed)).value.data.parsed["info"]
    assert mint_info["supply"] == "5000000" and mint_info["decimals"] == 6
    raw = (await client.get_account_info(dest, Confirmed)).value
    assert raw.owner == program and len(raw.data) >= 165

    meta = (await get_tx(client, sig)).transaction.meta
    post = {str(b.owner): b.ui_token_amount.amount for b in meta.post_token_balances}
    assert post == {str(payer.pubkey()): "3765500", str(recipient.pubkey()): "1234500"}


# ----------------------------------------------------------------------------- ticker and launcher


async def test_auto_tick_and_clean_stop() -> None:
    t0 = time.monotonic()
    async with run_solana_devnet(port=0, slot_ms=20) as devnet:
        assert time.monotonic() - t0 < 2.0
        async with AsyncClient(devnet.url, commitment=Confirmed) as client:
            first = (await client.get_slot(Confirmed)).value
            before = await devnet.state()
            await asyncio.sleep(0.3)
            second = (await client.get_slot(Confirmed)).value
            assert second - first >= 5
            after = await devnet.state()  # one block per slot: slot and height move together
            assert after["slot"] - before["slot"] == after["blockHeight"] - before["blockHeight"] >= 5
            await devnet.set_auto_tick(False)
            frozen = (await client.get_slot(Confirmed)).value
            await asyncio.sleep(0.1)
            assert (await client.get_slot(Confirmed)).value == frozen
            await devnet.set_auto_tick(True, slot_ms=10)
            await asyncio.sleep(0.2)
            assert (await client.get_slot(Confirmed)).value > frozen
        url = devnet.url
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as http:
            await http.post(url, content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "getSlot"}))
