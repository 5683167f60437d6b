"""The signing guard: a key signs only the approved intent.

- A withdrawal whose stored intent is altered after it was requested (here: the destination,
  by plain SQL while it waits for approval) is refused before signing: POLICY_VIOLATION, nothing
  signed, an alert on the withdrawal.
- On each chain, bytes that differ from the expectation in any one way (destination, amount,
  asset, slot, fee above the cap, a memo) are refused and the key is never asked; the guarded
  signer also refuses a message it was never shown (fail closed); the decoders refuse what custody
  never builds (contract calls, unknown programs and operations).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest
from eth_account import Account
from solders.keypair import Keypair as SolanaKeypair
from sqlalchemy import update
from stellar_sdk import Keypair as StellarKeypair
from web3 import AsyncHTTPProvider, AsyncWeb3

from activities.signing_guard import CANCEL, TRANSFER, Expectation, GuardedSigner
from chains.base import Memo, TransferIntent
from chains.evm import EvmChain
from chains.solana import SolanaChain
from chains.stellar import StellarChain
from core.errors import PolicyViolation
from core.settings import GWEI, EvmChainSettings, SolanaChainSettings, StellarChainSettings
from devnet.solana import run_solana_devnet
from devnet.stellar import run_stellar_devnet
from models.db import Withdrawal
from tests.conftest import api_client, create_wallet, fund, random_address, wait_for_status, withdraw
from worker import build_worker


class _Key:
    """A signer that records whether it was ever asked."""

    def __init__(self, sign: Any) -> None:
        self._sign = sign
        self.asked = 0

    async def __call__(self, message: bytes) -> bytes:
        self.asked += 1
        return await self._sign(message)


async def _refused(reasons: str) -> None:
    _refused.last = reasons  # type: ignore[attr-defined]


async def test_an_intent_altered_after_the_request_is_refused_before_signing(base_settings, task_queue, client, sessions):
    settings = base_settings.model_copy(
        update={"task_queue": task_queue, "approval_thresholds": {"anvil:ETH": "0.1"}, "approval_timeout_seconds": 600}
    )
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await fund(api, wallet, "1")
        honest, attacker = random_address(), random_address()
        accepted = (await withdraw(api, wallet, honest, "0.5")).json()
        await wait_for_status(api, accepted["id"], {"AWAITING_APPROVAL"})
        async with sessions() as session, session.begin():
            await session.exec(update(Withdrawal).where(Withdrawal.id == accepted["id"]).values(destination=attacker))  # type: ignore[arg-type]
        approved = await api.post(f"/v1/withdrawals/{accepted['id']}/approve", json={}, headers={"Authorization": "Bearer dev-ops-key"})
        assert approved.status_code == 200, approved.text
        done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
        assert done["status"] == "FAILED" and done["error_code"] == "POLICY_VIOLATION", done
        assert done["attempts"] == [] and done["nonce"] is None
        web3 = AsyncWeb3(AsyncHTTPProvider(settings.chains["anvil"].rpc_url))
        assert await web3.eth.get_balance(attacker) == 0 and await web3.eth.get_transaction_count(wallet["address"]) == 0


# --- per chain: any difference from the expectation is refused; the key is never asked ---------------


def _variants(expected: Expectation) -> dict[str, Expectation]:
    return {
        "destination": dataclasses.replace(expected, destination=expected.wallet),
        "amount": dataclasses.replace(expected, amount=expected.amount + 1),
        "slot": dataclasses.replace(expected, sequence=(expected.sequence or 0) + 1) if expected.sequence is not None else None,
        "purpose": dataclasses.replace(expected, purpose=CANCEL),
    }


async def _assert_guarded(chain: Any, intent: TransferIntent, sequence: int | None, expected: Expectation, plain: Any) -> None:
    key = _Key(plain)
    signed = await chain.sign_transfer(intent, sequence, GuardedSigner(key, chain, expected, _refused))
    assert signed.tx_hash and key.asked >= 1  # the honest request is signed
    for name, variant in _variants(expected).items():
        if variant is None:
            continue
        key = _Key(plain)
        with pytest.raises(PolicyViolation):
            await chain.sign_transfer(intent, sequence, GuardedSigner(key, chain, variant, _refused))
        assert key.asked == 0, f"the key was asked to sign although the {name} differed"
    key = _Key(plain)
    with pytest.raises(PolicyViolation):
        await GuardedSigner(key, chain, expected, _refused)(b"\x00" * 32)  # never shown: fail closed
    assert key.asked == 0


async def test_evm_guard(anvil) -> None:  # type: ignore[no-untyped-def]
    chain = EvmChain("anvil", EvmChainSettings(chain_id=31337, rpc_url=anvil.info["rpc_url"]))
    account = Account.create()
    await chain.web3.provider.make_request("anvil_setBalance", [account.address, hex(10**18)])

    async def plain(digest: bytes) -> bytes:
        signed = Account._sign_hash(digest, account.key)  # type: ignore[attr-defined]
        return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v - 27])

    destination = random_address()
    intent = TransferIntent(account.address, destination, chain.asset("ETH"), 10**15)
    expected = Expectation(TRANSFER, account.address, account.address, 0, None, destination, 10**15, None)
    await _assert_guarded(chain, intent, 0, expected, plain)
    capped = EvmChain("anvil", EvmChainSettings(chain_id=31337, rpc_url=anvil.info["rpc_url"], max_fee_per_gas_cap_wei=GWEI))
    with pytest.raises(PolicyViolation, match="cap"):  # the adapter may only ever use the cap: a lower cap refuses
        await EvmChain.sign_transfer(chain, intent, 0, GuardedSigner(_Key(plain), capped, expected, _refused))
    contract_call = bytes([2]) + b"\xf8"  # truncated / not ours
    with pytest.raises(PolicyViolation):
        chain.describe_unsigned(contract_call)


async def test_solana_guard() -> None:
    async with run_solana_devnet(host="127.0.0.1", port=0, slot_ms=0) as devnet:
        chain = SolanaChain("solana", SolanaChainSettings(rpc_url=devnet.url, commitment="confirmed"))
        sender = SolanaKeypair()

        async def plain(message: bytes) -> bytes:
            return bytes(sender.sign_message(message))

        destination = str(SolanaKeypair().pubkey())
        memo = Memo("text", "invoice 42")
        intent = TransferIntent(str(sender.pubkey()), destination, chain.asset("SOL"), 10**9, memo=memo)
        expected = Expectation(TRANSFER, str(sender.pubkey()), str(sender.pubkey()), None, None, destination, 10**9, memo)
        await _assert_guarded(chain, intent, None, expected, plain)
        with pytest.raises(PolicyViolation):  # another memo than the requested one
            await chain.sign_transfer(intent, None, GuardedSigner(_Key(plain), chain, dataclasses.replace(expected, memo=None), _refused))


async def test_stellar_guard() -> None:
    async with run_stellar_devnet(port=0, close_interval_ms=100) as devnet:
        chain = StellarChain("stellar", StellarChainSettings(horizon_url=devnet.url, network_passphrase=devnet.network_passphrase))
        sender, destination = StellarKeypair.random(), StellarKeypair.random().public_key

        async def plain(message: bytes) -> bytes:
            return bytes(sender.sign(message))

        intent = TransferIntent(sender.public_key, destination, chain.asset("XLM"), 2 * 10**7)
        expected = Expectation(TRANSFER, sender.public_key, sender.public_key, 7, None, destination, 2 * 10**7, None)
        await _assert_guarded(chain, intent, 7, expected, plain)
        other_network = StellarChain("stellar", StellarChainSettings(horizon_url=devnet.url, network_passphrase="Another network"))
        key = _Key(plain)
        with pytest.raises(PolicyViolation, match="message"):  # bytes bound to another network's hash
            await chain.sign_transfer(intent, 7, GuardedSigner(key, other_network, expected, _refused))
        assert key.asked == 0


def test_the_decoders_refuse_what_custody_never_builds() -> None:
    evm = EvmChain("anvil", EvmChainSettings(chain_id=31337, rpc_url="http://127.0.0.1:1"))
    from eth_account.typed_transactions import TypedTransaction

    from chains.evm import _unsigned_type2

    call = TypedTransaction.from_dict(
        {
            "type": 2,
            "chainId": 31337,
            "nonce": 0,
            "gas": 90_000,
            "maxFeePerGas": GWEI,
            "maxPriorityFeePerGas": GWEI,
            "to": random_address(),
            "value": 0,
            "data": bytes.fromhex("095ea7b3") + bytes(64),  # approve(): not a transfer
        }
    )
    with pytest.raises(PolicyViolation, match="call data"):
        evm.describe_unsigned(_unsigned_type2(call))
    other_chain = TypedTransaction.from_dict(
        {
            "type": 2,
            "chainId": 1,
            "nonce": 0,
            "gas": 21_000,
            "maxFeePerGas": GWEI,
            "maxPriorityFeePerGas": GWEI,
            "to": random_address(),
            "value": 1,
            "data": b"",
        }
    )
    with pytest.raises(PolicyViolation, match="chain id"):
        evm.describe_unsigned(_unsigned_type2(other_chain))
    with pytest.raises(PolicyViolation):
        SolanaChain("solana", SolanaChainSettings(rpc_url="http://127.0.0.1:1")).describe_unsigned(uuid.uuid4().bytes)
    with pytest.raises(PolicyViolation):
        StellarChain("s", StellarChainSettings(horizon_url="http://127.0.0.1:1", network_passphrase="x")).describe_unsigned(b"junk")


async def test_a_row_without_a_seal_is_refused(base_settings) -> None:
    """A withdrawal row inserted without a seal (the way a process without the seal key would) is
    refused by the same check, whatever its other fields say."""
    from activities.signing_guard import require_seal

    row = Withdrawal(
        id=str(uuid.uuid4()),
        owner="alice",
        wallet_id="w",
        chain="anvil",
        asset="ETH",
        destination=random_address(),
        amount=1,
        idempotency_key="k",
        request_hash="h",
    )
    with pytest.raises(PolicyViolation, match="seal"):
        require_seal(base_settings.intent_seal_key_bytes, row)
