"""The `Chain` protocol (chains/base.py), proved against every adapter on its real devnet.

One class, run once per family through the parametrized `adapter` fixture (tests/chains/
conftest.py), as web3.py runs one test class against every backend: what one chain promises,
each chain keeps, on its own adapter and behind the FailoverChain that several endpoints make.
Chain-specific depth stays in tests/test_chain_<family>.py. A new family fails
`test_every_configured_family_has_a_harness` until it has a harness here and passes the class.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from chains.base import ChannelKey, SignedTransfer, TransferIntent, TransferStatus
from core.errors import InvalidMemo, InvalidRecipient, PolicyViolation, SigningFailed, UnknownAsset
from models.payloads import OnChainState
from tests.chains.conftest import KEYS, Account, Harness, RecordingSigner

# One well-formed address per family (fresh keys): each adapter must refuse the others' as a destination.
FOREIGN = {family: key().address for family, key in KEYS.items()}


async def _outcome(adapter: Harness, intent: TransferIntent, attempts: list[SignedTransfer]) -> TransferStatus:
    """The adapter's verdict once it has one: every devnet here applies a transaction at once,
    so a PENDING that persists is a failure, not a wait."""
    for _ in range(100):
        status = await adapter.chain.transfer_status(intent, attempts)
        if status.state != OnChainState.PENDING:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{adapter.family}: still pending: {status}")


async def _transfer(adapter: Harness, sender: Account, destination: str, amount: int | None = None) -> TransferIntent:
    intent = TransferIntent(sender.address, destination, adapter.native, adapter.amount if amount is None else amount)
    await adapter.chain.preflight(intent)
    return intent


async def _sign(adapter: Harness, intent: TransferIntent, sign, sequence: int | None = None, **kw) -> SignedTransfer:  # type: ignore[no-untyped-def]
    if sequence is None:
        sequence = await adapter.chain.next_sequence(intent.sender, None)
    return await adapter.chain.sign_transfer(intent, sequence, sign, **kw)


class TestChainConformance:
    # ------------------------------------------------------------------- addresses, memos, assets

    def test_addresses_are_canonical_and_bad_ones_have_a_stable_code(self, adapter: Harness) -> None:
        chain = adapter.chain
        address = adapter.new_key().address
        canonical = chain.normalize_address(address)
        assert chain.normalize_address(canonical) == canonical
        assert chain.account_of(canonical) == canonical
        others = [a for family, a in FOREIGN.items() if family != adapter.family]
        for bad in ["", "not an address", address[:-3], *others]:
            with pytest.raises(InvalidRecipient) as refused:
                chain.normalize_address(bad)
            assert refused.value.code == "INVALID_RECIPIENT"
        # the family's own well-formed sample is accepted (the table above stays honest)
        assert chain.normalize_address(FOREIGN[adapter.family])

    def test_memos_and_assets_refuse_with_stable_codes(self, adapter: Harness) -> None:
        chain = adapter.chain
        for bad in [_memo("text", "x" * 1000), _memo("no-such-kind", "1")]:
            with pytest.raises(InvalidMemo) as refused:
                chain.validate_memo(bad)
            assert refused.value.code == "INVALID_MEMO"
        with pytest.raises(UnknownAsset) as unknown:
            chain.asset("NO-SUCH-ASSET")
        assert unknown.value.code == "UNKNOWN_ASSET"
        assert adapter.native.is_native and adapter.native.symbol == chain.settings.native_symbol

    # ------------------------------------------------------------------- reads

    async def test_balance_and_fee_estimate(self, adapter: Harness) -> None:
        chain = adapter.chain
        sender, nobody = await adapter.new_account(), adapter.new_key()
        assert await chain.balance(nobody.address, adapter.native) == 0
        assert await chain.balance(sender.address, adapter.native) > adapter.amount
        intent = await _transfer(adapter, sender, (await adapter.new_account()).address)
        estimate = await chain.estimate_max_fee(intent)
        assert estimate > 0
        signed = await _sign(adapter, intent, sender.sign)
        assert 0 < signed.max_fee <= estimate  # the estimate bounds what signing commits to

    # ------------------------------------------------------------------- sign, broadcast, outcome

    async def test_sign_then_broadcast_the_same_bytes_twice_pays_once(self, adapter: Harness) -> None:
        chain = adapter.chain
        sender, receiver = await adapter.new_account(), await adapter.new_account()
        sender_before = await chain.balance(sender.address, adapter.native)
        receiver_before = await chain.balance(receiver.address, adapter.native)
        intent = await _transfer(adapter, sender, receiver.address)
        slot = await chain.next_sequence(sender.address, None)

        with pytest.raises(SigningFailed):  # a key that is not the sender's is never broadcast
            await _sign(adapter, intent, adapter.new_key().sign, slot)
        signed = await _sign(adapter, intent, sender.sign, slot)
        assert signed.sequence == slot and signed.purpose == "TRANSFER"
        assert bytes.fromhex(signed.raw_tx) and signed.tx_hash

        assert await chain.broadcast(signed) == "accepted"
        status = await _outcome(adapter, intent, [signed])
        assert status.state == OnChainState.CONFIRMED and status.tx_hash == signed.tx_hash, status
        # The same bytes again (a lost answer, a worker restart): never an error, never applied twice.
        again = await chain.broadcast(signed)
        assert again in ("known", "accepted", "slot_used"), again
        status = await _outcome(adapter, intent, [signed])
        assert status.state == OnChainState.CONFIRMED and status.tx_hash == signed.tx_hash, status
        assert await chain.is_known(signed.tx_hash)

        assert status.fee_paid is not None and 0 < status.fee_paid <= signed.max_fee
        assert await chain.balance(receiver.address, adapter.native) == receiver_before + adapter.amount
        assert await chain.balance(sender.address, adapter.native) == sender_before - adapter.amount - status.fee_paid
        if slot is not None:
            assert await chain.settled_sequence(sender.address) == slot + 1

    async def test_a_channel_is_refused_where_the_family_has_none(self, adapter: Harness) -> None:
        if adapter.chain.supports_channels:
            pytest.skip("this family signs with channel accounts (activities/channels.py)")
        sender, channel = adapter.new_key(), adapter.new_key()
        intent = TransferIntent(sender.address, adapter.new_key().address, adapter.native, adapter.amount)
        with pytest.raises(SigningFailed) as refused:  # its sequence is no slot here: never signed
            await _sign(adapter, intent, sender.sign, channel=ChannelKey(channel.address, channel.sign))
        assert refused.value.code == "SIGNING_FAILED"

    async def test_a_send_never_broadcast_is_unknown_pending_and_can_still_land(self, adapter: Harness) -> None:
        chain = adapter.chain
        sender, receiver = await adapter.new_account(), await adapter.new_account()
        receiver_before = await chain.balance(receiver.address, adapter.native)
        intent = await _transfer(adapter, sender, receiver.address)
        lost = await _sign(adapter, intent, sender.sign)

        assert not await chain.is_known(lost.tx_hash)
        status = await chain.transfer_status(intent, [lost])
        # not landed, and nothing proves it cannot: neither EXPIRED nor SLOT_LOST
        assert status.state == OnChainState.PENDING and status.block_number is None, status
        assert await chain.balance(receiver.address, adapter.native) == receiver_before

        assert await chain.broadcast(lost) == "accepted"  # found later: the same bytes still land
        status = await _outcome(adapter, intent, [lost])
        assert status.state == OnChainState.CONFIRMED and status.tx_hash == lost.tx_hash, status
        assert await chain.balance(receiver.address, adapter.native) == receiver_before + adapter.amount

    async def test_an_unsent_attempt_is_replaced_in_its_slot_or_provably_expires(self, adapter: Harness) -> None:
        chain = adapter.chain
        sender, receiver = await adapter.new_account(), await adapter.new_account()
        receiver_before = await chain.balance(receiver.address, adapter.native)
        intent = await _transfer(adapter, sender, receiver.address)
        first = await _sign(adapter, intent, sender.sign)

        if chain.replaceable_in_slot:
            successor = await _sign(adapter, intent, sender.sign, first.sequence, replacing=first)
            assert successor.sequence == first.sequence and successor.max_fee > first.max_fee
            assert await chain.broadcast(successor) == "accepted"
            status = await _outcome(adapter, intent, [first, successor])
            assert status.state == OnChainState.CONFIRMED and status.tx_hash == successor.tx_hash, status
            # the replaced attempt can no longer take the slot
            assert await chain.broadcast(first) == "slot_used"
            assert not await chain.is_known(first.tx_hash)
        else:
            await adapter.outlive()
            status = await chain.transfer_status(intent, [first])
            assert status.state == OnChainState.EXPIRED and status.tx_hash == first.tx_hash, status
            assert await chain.broadcast(first) != "accepted"  # refused, nothing consumed
            assert not await chain.is_known(first.tx_hash)
            # a fresh signature of the same transfer (same slot where there is one) lands once
            successor = await _sign(adapter, intent, sender.sign, first.sequence)
            assert successor.tx_hash != first.tx_hash
            assert await chain.broadcast(successor) == "accepted"
            status = await _outcome(adapter, intent, [first, successor])
            assert status.state == OnChainState.CONFIRMED and status.tx_hash == successor.tx_hash, status
        assert await chain.balance(receiver.address, adapter.native) == receiver_before + adapter.amount

    # ------------------------------------------------------------------- the signing guard's view

    async def test_describe_unsigned_reads_back_what_was_asked(self, adapter: Harness) -> None:
        chain = adapter.chain
        sender, receiver = await adapter.new_account(), await adapter.new_account()
        intent = await _transfer(adapter, sender, receiver.address)
        recording = RecordingSigner(sender.sign)
        signed = await _sign(adapter, intent, recording)
        assert len(recording.shown) == 1, "the adapter must show the unsigned bytes before signing"
        message, unsigned = recording.shown[0]

        request = chain.describe_unsigned(unsigned)
        assert request.message == message
        assert request.sequence == signed.sequence
        assert request.max_fee == signed.max_fee and request.fee_within_cap
        assert request.fee_payer in ("", sender.address)  # EVM: the signer is the payer, not in the bytes
        assert len(request.movements) == 1, request.movements
        movement = request.movements[0]
        assert movement.asset is None and movement.amount == adapter.amount
        assert movement.destination == chain.account_of(receiver.address)
        assert movement.source in ("", sender.address)
        assert request.memo is None and request.trustline is None

        for junk in (b"", b"\x02\xf8", bytes(range(256))):
            with pytest.raises(PolicyViolation) as refused:
                chain.describe_unsigned(junk)
            assert refused.value.code == "POLICY_VIOLATION"

    # ------------------------------------------------------------------- sweep

    async def test_sweep_leaves_zero(self, adapter: Harness) -> None:
        chain = adapter.chain
        sender, bank = await adapter.new_account(), await adapter.new_account()
        bank_before = await chain.balance(bank.address, adapter.native)
        ask = TransferIntent(sender.address, bank.address, adapter.native, 0, sweep=True)
        quote = await chain.sweep_quote(ask)
        assert quote.amount > 0 and quote.fee > 0
        intent = replace(ask, amount=quote.amount, fee=quote.fee)
        signed = await _sign(adapter, intent, sender.sign)
        assert signed.max_fee == quote.fee
        assert await chain.broadcast(signed) == "accepted"
        status = await _outcome(adapter, intent, [signed])
        assert status.state == OnChainState.CONFIRMED and status.fee_paid == quote.fee, status
        assert await chain.balance(sender.address, adapter.native) == 0
        received = await chain.balance(bank.address, adapter.native) - bank_before
        # Stellar's merge also frees the bank nothing of its reserve: it receives the whole quote
        assert received == quote.amount


def test_every_configured_family_has_a_harness() -> None:
    from core.settings import ChainSettingsBase

    families = {cls.model_fields["family"].default for cls in ChainSettingsBase.__subclasses__()}
    assert families == set(KEYS), f"families without a conformance harness: {families - set(KEYS)}"


def _memo(kind: str, value: str):  # type: ignore[no-untyped-def]
    from chains.base import Memo

    return Memo(kind, value)
