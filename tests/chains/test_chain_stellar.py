"""The Stellar adapter (chains/stellar.py) against the Horizon-compatible devnet.

Each test makes its own accounts with friendbot; keys are local stellar-sdk keypairs wrapped in
the same `sign(message) -> signature` shape a signer backend provides.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime

import httpx
import pytest
from stellar_sdk import Asset, Keypair, MuxedAccount, ServerAsync, TransactionBuilder, TransactionEnvelope
from stellar_sdk.client.aiohttp_client import AiohttpClient

from chains.base import ChannelKey, Memo, SignedTransfer, TransferIntent
from chains.stellar import StellarChain, format_stroops, parse_stroops
from core.errors import (
    AlreadyFunded,
    BelowAccountMinimum,
    ChainUnavailable,
    FeeAboveCap,
    FeeTooLow,
    InsufficientFunds,
    InvalidAmount,
    InvalidMemo,
    InvalidRecipient,
    MemoRequired,
    NotAvailable,
    RecipientNoTrustline,
    SigningFailed,
)
from core.settings import StellarChainSettings, TokenSettings
from devnet.stellar import StellarDevnet, run_stellar_devnet
from models.payloads import OnChainState
from tests.conftest import until

XLM = 10_000_000
FRIENDBOT_XLM = 10_000
ISSUER = Keypair.random()
USDX = f"USDX:{ISSUER.public_key}"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def devnet() -> AsyncIterator[StellarDevnet]:
    async with run_stellar_devnet(port=0, close_interval_ms=100) as d:
        yield d


@pytest.fixture(scope="module")
async def chain(devnet: StellarDevnet) -> AsyncIterator[StellarChain]:
    settings = StellarChainSettings(
        horizon_url=devnet.url,
        network_passphrase=devnet.network_passphrase,
        friendbot_url=devnet.friendbot_url,
        tokens={"USDX": TokenSettings(address=USDX, decimals=7)},
        faucet_enabled=True,
    )
    adapter = StellarChain("stellar", settings)
    await adapter.faucet(ISSUER.public_key, adapter.asset("XLM"), None)
    yield adapter
    await adapter.close()


@pytest.fixture(scope="module")
async def server(devnet: StellarDevnet) -> AsyncIterator[ServerAsync]:
    async with ServerAsync(devnet.url, client=AiohttpClient()) as s:
        yield s


@pytest.fixture(scope="module")
async def http(devnet: StellarDevnet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=devnet.url, timeout=30) as c:
        yield c


# ----------------------------------------------------------------------------- helpers


def signer(kp: Keypair):  # type: ignore[no-untyped-def]
    async def sign(message: bytes) -> bytes:
        return kp.sign(message)

    return sign


async def funded(chain: StellarChain) -> Keypair:
    kp = Keypair.random()
    funding = await chain.faucet(kp.public_key, chain.asset("XLM"), None)
    assert await chain.is_known(funding.tx_hash) and funding.amount == 10_000 * XLM  # friendbot's own amount
    return kp


def intent(chain: StellarChain, sender: Keypair, to: str, amount: int, asset: str = "XLM", memo: Memo | None = None):  # type: ignore[no-untyped-def]
    return TransferIntent(sender=sender.public_key, destination=to, asset=chain.asset(asset), amount=amount, memo=memo)


async def sign(chain: StellarChain, sender: Keypair, transfer: TransferIntent, sequence: int | None = None) -> SignedTransfer:
    if sequence is None:
        sequence = await chain.next_sequence(sender.public_key, None)
    return await chain.sign_transfer(transfer, sequence, signer(sender))


async def send(chain: StellarChain, sender: Keypair, transfer: TransferIntent) -> SignedTransfer:
    signed = await sign(chain, sender, transfer)
    assert await chain.broadcast(signed) == "accepted"
    status = await chain.transfer_status(transfer, [signed])
    assert status.state == OnChainState.CONFIRMED, status
    return signed


async def raw_balance(server: ServerAsync, account_id: str, asset: str = "native") -> int:
    account = await server.accounts().account_id(account_id).call()
    for line in account["balances"]:
        if asset == "native" and line["asset_type"] == "native":
            return parse_stroops(line["balance"])
        if asset != "native" and f"{line.get('asset_code')}:{line.get('asset_issuer')}" == asset:
            return parse_stroops(line["balance"])
    raise AssertionError(f"{account_id} holds no {asset}")


async def network_time(server: ServerAsync) -> int:
    latest = (await server.ledgers().order(desc=True).limit(1).call())["_embedded"]["records"][0]
    return int(datetime.fromisoformat(latest["closed_at"].replace("Z", "+00:00")).timestamp())


async def account_sequence(server: ServerAsync, account_id: str) -> int:
    return int((await server.accounts().account_id(account_id).call())["sequence"])


async def submit_sdk(server: ServerAsync, passphrase: str, kp: Keypair, build) -> dict:  # type: ignore[no-untyped-def]
    account = await server.load_account(kp.public_key)
    builder = TransactionBuilder(account, passphrase, base_fee=100).set_timeout(3600)
    tx = build(builder).build()
    tx.sign(kp)
    return await server.submit_transaction(tx, skip_memo_required_check=True)


async def trust(server: ServerAsync, devnet: StellarDevnet, kp: Keypair, asset: str = USDX) -> None:
    code, _, issuer = asset.partition(":")
    await submit_sdk(server, devnet.network_passphrase, kp, lambda b: b.append_change_trust_op(Asset(code, issuer)))


async def issue(server: ServerAsync, devnet: StellarDevnet, to: str, amount: int) -> None:
    code, _, issuer = USDX.partition(":")
    await submit_sdk(
        server,
        devnet.network_passphrase,
        ISSUER,
        lambda b: b.append_payment_op(to, Asset(code, issuer), format_stroops(amount)),
    )


# ----------------------------------------------------------------------------- pure checks


def test_addresses_memos_and_amounts(chain: StellarChain) -> None:
    kp = Keypair.random()
    assert chain.normalize_address(kp.public_key) == kp.public_key
    assert chain.normalize_address(f" {kp.public_key} ") == kp.public_key
    muxed = MuxedAccount(kp.public_key, 7).account_muxed
    assert chain.normalize_address(muxed) == muxed
    corrupted = kp.public_key[:-1] + ("A" if kp.public_key[-1] != "A" else "B")
    for bad in ("0x000000000000000000000000000000000000dEaD", kp.public_key.lower(), corrupted, kp.secret, "", "GABC"):
        with pytest.raises(InvalidRecipient):
            chain.normalize_address(bad)
    assert chain.address_from_public_key(kp.raw_public_key()) == kp.public_key
    with pytest.raises(SigningFailed):
        chain.address_from_public_key(b"\x04" + b"\x00" * 64)

    assert chain.validate_memo(Memo("text", "é" * 14)) == Memo("text", "é" * 14)  # 28 bytes
    assert chain.validate_memo(Memo("id", "0042")) == Memo("id", "42")
    assert chain.validate_memo(Memo("id", str(2**64 - 1))).value == str(2**64 - 1)
    assert chain.validate_memo(Memo("hash", "AB" * 32)) == Memo("hash", "ab" * 32)
    for bad in (
        Memo("text", "x" * 29),
        Memo("text", "é" * 15),
        Memo("id", "-1"),
        Memo("id", str(2**64)),
        Memo("id", "1e3"),
        Memo("id", "１２"),
        Memo("hash", "ab" * 31),
        Memo("hash", "zz" * 32),
        Memo("return", "ab" * 32),
    ):
        with pytest.raises(InvalidMemo):
            chain.validate_memo(bad)

    assert chain.asset("XLM").decimals == 7 and chain.asset("XLM").is_native
    assert chain.asset("USDX").contract == USDX
    assert parse_stroops("10000.0000000") == 10_000 * XLM and parse_stroops("0.0000001") == 1
    assert parse_stroops("12.5") == 125_000_000 and format_stroops(125_000_000) == "12.5000000"
    with pytest.raises(ValueError):
        StellarChain("bad", chain.settings.model_copy(update={"tokens": {"X": TokenSettings(address=USDX, decimals=6)}}))


# ----------------------------------------------------------------------------- transfers


async def test_create_account_then_payment(chain: StellarChain, server: ServerAsync) -> None:
    alice = await funded(chain)
    new = Keypair.random().public_key
    assert await chain.balance(new, chain.asset("XLM")) == 0

    with pytest.raises(BelowAccountMinimum, match="at least 1 XLM"):
        await chain.preflight(intent(chain, alice, new, XLM - 1))
    with pytest.raises(InvalidRecipient):
        await chain.sign_transfer(intent(chain, alice, new, XLM // 2), await chain.settled_sequence(alice.public_key), signer(alice))

    first = intent(chain, alice, new, 5 * XLM)
    await chain.preflight(first)
    seq_before = await chain.settled_sequence(alice.public_key)
    signed = await send(chain, alice, first)
    assert signed.fee_params["operation"] == "create_account"
    assert signed.sequence == seq_before and signed.max_fee == 100
    assert await raw_balance(server, new) == 5 * XLM
    assert await chain.balance(new, chain.asset("XLM")) == 4 * XLM  # minus the 1 XLM minimum balance
    assert await chain.settled_sequence(alice.public_key) == seq_before + 1

    second = intent(chain, alice, new, 25 * XLM // 10)
    await chain.preflight(second)
    paid = await send(chain, alice, second)
    assert paid.fee_params["operation"] == "payment"
    status = await chain.transfer_status(second, [paid])
    assert status.tx_hash == paid.tx_hash and status.fee_paid == 100 and status.block_number
    assert await raw_balance(server, new) == 75 * XLM // 10
    assert await raw_balance(server, alice.public_key) == FRIENDBOT_XLM * XLM - 75 * XLM // 10 - 200
    tx = await server.transactions().transaction(paid.tx_hash).call()
    assert tx["source_account"] == alice.public_key and tx["fee_charged"] == "100"


async def test_credit_asset_trustline_rules(chain: StellarChain, server: ServerAsync, devnet: StellarDevnet) -> None:
    wallet, holder, stranger = await funded(chain), await funded(chain), await funded(chain)
    usdx = chain.asset("USDX")
    assert await chain.balance(wallet.public_key, usdx) == 0
    await trust(server, devnet, wallet)
    await trust(server, devnet, holder)
    await issue(server, devnet, wallet.public_key, 100 * XLM)
    assert await chain.balance(wallet.public_key, usdx) == 100 * XLM

    with pytest.raises(RecipientNoTrustline):
        await chain.preflight(intent(chain, wallet, stranger.public_key, XLM, "USDX"))
    with pytest.raises(RecipientNoTrustline):
        await chain.preflight(intent(chain, wallet, Keypair.random().public_key, 5 * XLM, "USDX"))
    await chain.preflight(intent(chain, wallet, ISSUER.public_key, XLM, "USDX"))  # the issuer needs none

    transfer = intent(chain, wallet, holder.public_key, 125 * XLM // 10, "USDX")
    await chain.preflight(transfer)
    await send(chain, wallet, transfer)
    assert await chain.balance(holder.public_key, usdx) == 125 * XLM // 10
    assert await chain.balance(wallet.public_key, usdx) == 875 * XLM // 10

    # Sent without the preflight: applied with a failed operation, sequence and fee consumed.
    seq = await account_sequence(server, wallet.public_key)
    no_trust = intent(chain, wallet, stranger.public_key, XLM, "USDX")
    signed = await sign(chain, wallet, no_trust)
    assert await chain.broadcast(signed) == "applied_failed"
    status = await chain.transfer_status(no_trust, [signed])
    assert status.state == OnChainState.REVERTED and "PAYMENT_NO_TRUST" in status.detail
    assert status.fee_paid == 100
    assert await account_sequence(server, wallet.public_key) == seq + 1
    assert await chain.balance(wallet.public_key, usdx) == 875 * XLM // 10


async def test_memo_required_and_memo_on_chain(chain: StellarChain, server: ServerAsync, devnet: StellarDevnet) -> None:
    user, exchange = await funded(chain), await funded(chain)
    await submit_sdk(
        server,
        devnet.network_passphrase,
        exchange,
        lambda b: b.append_manage_data_op("config.memo_required", "1"),
    )
    with pytest.raises(MemoRequired):
        await chain.preflight(intent(chain, user, exchange.public_key, 5 * XLM))
    memo = chain.validate_memo(Memo("text", "deposit-77"))
    transfer = intent(chain, user, exchange.public_key, 5 * XLM, memo=memo)
    await chain.preflight(transfer)
    signed = await send(chain, user, transfer)
    tx = await server.transactions().transaction(signed.tx_hash).call()
    assert (tx["memo_type"], tx["memo"]) == ("text", "deposit-77")

    id_memo = intent(chain, user, exchange.public_key, XLM, memo=chain.validate_memo(Memo("id", "18446744073709551615")))
    signed = await send(chain, user, id_memo)
    tx = await server.transactions().transaction(signed.tx_hash).call()
    assert (tx["memo_type"], tx["memo"]) == ("id", "18446744073709551615")


async def test_muxed_destination_credits_the_g_account(chain: StellarChain, server: ServerAsync) -> None:
    alice, bob = await funded(chain), await funded(chain)
    muxed = MuxedAccount(bob.public_key, 9001).account_muxed
    transfer = intent(chain, alice, chain.normalize_address(muxed), 7 * XLM)
    await chain.preflight(transfer)
    await send(chain, alice, transfer)
    assert await raw_balance(server, bob.public_key) == (FRIENDBOT_XLM + 7) * XLM
    payment = (await server.payments().for_account(bob.public_key).order(desc=True).limit(1).call())["_embedded"]["records"][0]
    assert payment["to_muxed"] == muxed and payment["to_muxed_id"] == "9001"

    own_muxed = MuxedAccount(alice.public_key, 5).account_muxed
    with pytest.raises(InvalidRecipient, match="itself"):
        await chain.preflight(intent(chain, alice, own_muxed, 5 * XLM))
    unfunded_muxed = MuxedAccount(Keypair.random().public_key, 1).account_muxed
    with pytest.raises(InvalidRecipient):
        await chain.preflight(intent(chain, alice, unfunded_muxed, 5 * XLM))


# ----------------------------------------------------------------------------- exactly once


async def test_lost_response_resends_identical_bytes_and_applies_once(chain: StellarChain, server: ServerAsync, http: httpx.AsyncClient) -> None:
    alice, bob = await funded(chain), await funded(chain)
    seq = await account_sequence(server, alice.public_key)
    transfer = intent(chain, alice, bob.public_key, 25 * XLM)
    signed = await sign(chain, alice, transfer)

    r = await http.post("/_devnet/fail_next_submissions", json={"count": 1, "status": 504})
    assert r.json()["pending_failures"] == 1
    with pytest.raises(ChainUnavailable):
        await chain.broadcast(signed)
    # Only the answer was lost: stellar-core queued the envelope (the async endpoint answered
    # 504 after admitting it), and it lands when the next ledger closes (every 100 ms here), not
    # necessarily before this look: asking at once raced that close.
    await until(lambda: chain.is_known(signed.tx_hash), timeout=5, what="the envelope in a closed ledger")

    assert await chain.broadcast(signed) in ("accepted", "known")  # the same bytes again
    status = await chain.transfer_status(transfer, [signed])
    assert status.state == OnChainState.CONFIRMED and status.tx_hash == signed.tx_hash
    assert await account_sequence(server, alice.public_key) == seq + 1
    assert await raw_balance(server, bob.public_key) == (FRIENDBOT_XLM + 25) * XLM
    assert await raw_balance(server, alice.public_key) == (FRIENDBOT_XLM - 25) * XLM - 100


async def test_expired_attempt_is_provable_and_resigned_in_the_same_sequence(
    chain: StellarChain, server: ServerAsync, http: httpx.AsyncClient
) -> None:
    alice, bob = await funded(chain), await funded(chain)
    transfer = intent(chain, alice, bob.public_key, 3 * XLM)
    sequence = await chain.settled_sequence(alice.public_key)
    before = await network_time(server)
    stale = await sign(chain, alice, transfer, sequence)
    after = await network_time(server)
    window = chain.settings.timebounds_seconds
    assert before + window <= stale.fee_params["max_time"] <= after + window  # the network's clock

    status = await chain.transfer_status(transfer, [stale])
    assert status.state == OnChainState.PENDING  # not sent, but not provably dead either

    await http.post("/_devnet/advance_time", json={"seconds": chain.settings.timebounds_seconds + 60})
    await http.post("/_devnet/close_ledgers", json={"count": 1})
    status = await chain.transfer_status(transfer, [stale])
    assert status.state == OnChainState.EXPIRED, status
    assert await chain.broadcast(stale) == "expired"  # tx_too_late: nothing consumed
    assert await chain.settled_sequence(alice.public_key) == sequence

    fresh = await sign(chain, alice, transfer, sequence)
    assert fresh.sequence == stale.sequence and fresh.tx_hash != stale.tx_hash
    assert fresh.fee_params["max_time"] > stale.fee_params["max_time"]
    assert await chain.broadcast(fresh) == "accepted"
    status = await chain.transfer_status(transfer, [stale, fresh])
    assert status.state == OnChainState.CONFIRMED and status.tx_hash == fresh.tx_hash
    assert await raw_balance(server, bob.public_key) == (FRIENDBOT_XLM + 3) * XLM


async def test_bad_seq_alone_is_never_expiry(chain: StellarChain, server: ServerAsync, devnet: StellarDevnet) -> None:
    alice, bob = await funded(chain), await funded(chain)
    transfer = intent(chain, alice, bob.public_key, 2 * XLM)
    settled = await chain.settled_sequence(alice.public_key)

    # A gap: the slot ahead of ours is not filled yet. The node says tx_bad_seq; we wait.
    ahead = await sign(chain, alice, transfer, settled + 1)
    assert await chain.broadcast(ahead) == "slot_used"
    assert not await chain.is_known(ahead.tx_hash)
    status = await chain.transfer_status(transfer, [ahead])
    assert status.state == OnChainState.PENDING, status

    # Our slot consumed by a transaction that is not ours: provably dead, funds never moved.
    mine = await sign(chain, alice, transfer, settled)
    await submit_sdk(server, devnet.network_passphrase, alice, lambda b: b.append_bump_sequence_op(0))
    assert await chain.broadcast(mine) == "slot_used"
    status = await chain.transfer_status(transfer, [mine])
    assert status.state == OnChainState.EXPIRED and "consumed" in status.detail
    assert await raw_balance(server, bob.public_key) == FRIENDBOT_XLM * XLM

    # The queued-ahead attempt now fits exactly: re-sending the same bytes lands it.
    assert await chain.broadcast(ahead) == "accepted"
    assert (await chain.transfer_status(transfer, [ahead])).state == OnChainState.CONFIRMED
    assert await chain.next_sequence(alice.public_key, None) == settled + 2
    assert await chain.next_sequence(alice.public_key, settled + 5) == settled + 6


async def test_channel_account_is_the_transaction_source_and_its_sequence_the_slot(
    chain: StellarChain, server: ServerAsync, devnet: StellarDevnet
) -> None:
    wallet, channel, bob = await funded(chain), await funded(chain), await funded(chain)
    transfer = intent(chain, wallet, bob.public_key, 2 * XLM)
    wallet_sequence = await account_sequence(server, wallet.public_key)
    slot = await chain.next_sequence(channel.public_key, None)
    via_channel = ChannelKey(channel.public_key, signer(channel))

    with pytest.raises(SigningFailed):  # the channel's signature must come from the channel's key
        await chain.sign_transfer(transfer, slot, signer(wallet), channel=ChannelKey(channel.public_key, signer(wallet)))
    with pytest.raises(SigningFailed):  # a sweep (account_merge) is net of the fee the wallet pays itself
        await chain.sign_transfer(replace(transfer, sweep=True, fee=100), slot, signer(wallet), channel=via_channel)

    signed = await chain.sign_transfer(transfer, slot, signer(wallet), channel=via_channel)
    assert signed.fee_params["source"] == channel.public_key and signed.sequence == slot
    envelope = TransactionEnvelope.from_xdr(base64.b64encode(bytes.fromhex(signed.raw_tx)).decode(), devnet.network_passphrase)
    assert envelope.transaction.source.account_id == channel.public_key
    assert envelope.transaction.operations[0].source.account_id == wallet.public_key
    assert len(envelope.signatures) == 2
    assert await chain.broadcast(signed) == "accepted"
    assert (await chain.transfer_status(transfer, [signed])).state == OnChainState.CONFIRMED
    # The channel took the slot and paid the fee; the wallet only paid.
    assert await account_sequence(server, wallet.public_key) == wallet_sequence
    assert await account_sequence(server, channel.public_key) == slot
    assert await raw_balance(server, channel.public_key) == FRIENDBOT_XLM * XLM - 100
    assert await raw_balance(server, wallet.public_key) == (FRIENDBOT_XLM - 2) * XLM

    # Dead is judged by the channel's sequence: another transaction of the channel consumed ours.
    stale = await chain.sign_transfer(transfer, slot + 1, signer(wallet), channel=via_channel)
    await submit_sdk(server, devnet.network_passphrase, channel, lambda b: b.append_bump_sequence_op(0))
    status = await chain.transfer_status(transfer, [stale])
    assert status.state == OnChainState.EXPIRED and "consumed" in status.detail, status
    assert await raw_balance(server, bob.public_key) == (FRIENDBOT_XLM + 2) * XLM


# ----------------------------------------------------------------------------- balances and fees


async def test_spendable_balance_honours_the_reserve(chain: StellarChain, server: ServerAsync, devnet: StellarDevnet) -> None:
    xlm, usdx = chain.asset("XLM"), chain.asset("USDX")
    kp = await funded(chain)
    assert await chain.balance(kp.public_key, xlm) == FRIENDBOT_XLM * XLM - XLM  # 2 x 0.5 XLM locked
    assert await chain.balance(kp.public_key, usdx) == 0
    await trust(server, devnet, kp)  # one subentry: another 0.5 XLM locked, 100 stroops fee
    assert await chain.balance(kp.public_key, xlm) == FRIENDBOT_XLM * XLM - 3 * XLM // 2 - 100
    assert await chain.balance(Keypair.random().public_key, xlm) == 0

    nobody = Keypair.random().public_key
    with pytest.raises(InsufficientFunds):
        await chain.settled_sequence(nobody)
    with pytest.raises(InsufficientFunds):
        await chain.next_sequence(nobody, None)


async def test_fees_cap_and_too_low(chain: StellarChain) -> None:
    # Its own devnet with manual closes: the fee change must stay invisible until we close.
    async with run_stellar_devnet(port=0, close_interval_ms=0) as manual:
        settings = chain.settings.model_copy(
            update={"horizon_url": manual.url, "friendbot_url": manual.friendbot_url, "network_passphrase": manual.network_passphrase}
        )
        local = StellarChain("manual", settings)
        async with httpx.AsyncClient(base_url=manual.url, timeout=30) as http:
            try:
                await _fees_cap_and_too_low(local, http)
            finally:
                await local.close()


async def _fees_cap_and_too_low(chain: StellarChain, http: httpx.AsyncClient) -> None:
    alice, bob = await funded(chain), await funded(chain)
    transfer = intent(chain, alice, bob.public_key, XLM)
    assert await chain.estimate_max_fee(transfer) == 100
    # The node raises its fee before any ledger shows it: our fee is refused, nothing consumed.
    await http.post("/_devnet/set_base_fee", json={"stroops": 300})
    signed = await sign(chain, alice, transfer)
    with pytest.raises(FeeTooLow):
        await chain.broadcast(signed)
    await http.post("/_devnet/close_ledgers", json={"count": 1})
    assert await chain.estimate_max_fee(transfer) == 300
    resigned = await sign(chain, alice, transfer, signed.sequence)
    assert resigned.max_fee == 300 and await chain.broadcast(resigned) == "accepted"

    await http.post("/_devnet/set_base_fee", json={"stroops": chain.settings.base_fee_cap_stroops + 1})
    await http.post("/_devnet/close_ledgers", json={"count": 1})
    with pytest.raises(FeeAboveCap):
        await chain.estimate_max_fee(transfer)
    with pytest.raises(FeeAboveCap):
        await sign(chain, alice, transfer, signed.sequence + 1)


async def test_signing_is_verified_and_faucet_is_native_only(chain: StellarChain) -> None:
    alice, bob = await funded(chain), await funded(chain)
    transfer = intent(chain, alice, bob.public_key, XLM)
    sequence = await chain.settled_sequence(alice.public_key)
    with pytest.raises(SigningFailed):
        await chain.sign_transfer(transfer, sequence, signer(Keypair.random()))
    signed = await chain.sign_transfer(transfer, sequence, signer(alice))
    assert len(bytes.fromhex(signed.raw_tx)) > 100 and len(signed.tx_hash) == 64

    with pytest.raises(NotAvailable, match="no issuer key"):
        await chain.faucet(alice.public_key, chain.asset("USDX"), 1)
    with pytest.raises(InvalidAmount, match="fixed amount"):
        await chain.faucet(Keypair.random().public_key, chain.asset("XLM"), 1)
    with pytest.raises(AlreadyFunded):
        await chain.faucet(alice.public_key, chain.asset("XLM"), None)  # friendbot funds new accounts only


async def test_unreachable_horizon_is_transient(chain: StellarChain) -> None:
    dead = StellarChain("dead", chain.settings.model_copy(update={"horizon_url": "http://127.0.0.1:9"}))
    kp = Keypair.random()
    try:
        with pytest.raises(ChainUnavailable):
            await dead.balance(kp.public_key, dead.asset("XLM"))
        with pytest.raises(ChainUnavailable):
            await dead.broadcast(SignedTransfer(tx_hash="00" * 32, raw_tx="00", sequence=1, max_fee=100))
    finally:
        await dead.close()
