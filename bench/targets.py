"""What the benchmark measures on each chain: the withdrawal custody is asked to make, how its test
wallets are funded, a fresh destination per withdrawal, and the chain's ceiling: the same transfer
signed, sent and confirmed by the chain's own library on the same node, no custody, no Temporal.

A ceiling waits for the same finality custody waits for before COMPLETED (EVM: the receipt, one
block deep on instant blocks; Solana: `finalized`; Stellar: the ledger that applied it, which is
final), so the ratio compares like with like.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

# name on the command line -> (chain as configured in the bench stack, asset symbol)
KNOWN = {
    "evm": ("anvil", "ETH"),
    "evm-token": ("anvil", "TUSD"),
    "solana": ("solana", "SOL"),
    "stellar": ("stellar", "XLM"),
}


@dataclass(frozen=True)
class Target:
    name: str  # evm, evm-token, solana, stellar
    chain: str
    asset: str
    amount: str  # each withdrawal, decimal in the asset's unit
    fund: list[dict[str, Any]] = field(default_factory=list)  # POST /v1/wallets/{id}/fund bodies, in order
    destination: Callable[[], str] = lambda: ""

    @property
    def label(self) -> str:
        return f"{self.chain} {self.asset}"


def _evm_destination() -> str:
    return "0x" + os.urandom(20).hex()


def _solana_destination() -> str:
    from solders.keypair import Keypair

    return str(Keypair().pubkey())  # a wallet address: on the curve (custody refuses off-curve recipients)


def _stellar_destination() -> str:
    from stellar_sdk import Keypair

    return Keypair.random().public_key


def target(name: str) -> Target:
    chain, asset = KNOWN[name]
    if name == "evm":
        return Target(name, chain, asset, "0.0001", [{"amount": "10"}], _evm_destination)
    if name == "evm-token":
        return Target(name, chain, asset, "0.01", [{"amount": "10"}, {"asset": "TUSD", "amount": "100000"}], _evm_destination)
    if name == "solana":
        # A new account needs its rent-exempt minimum (890,880 lamports): 0.001 SOL is above it.
        return Target(name, chain, asset, "0.001", [{"amount": "10"}], _solana_destination)
    # XLM to an account that does not exist is a create_account of at least 1 XLM; friendbot funds
    # a fixed 10,000 XLM (no amount).
    return Target(name, chain, asset, "1", [{}], _stellar_destination)


# --------------------------------------------------------------------------- ceilings


async def ceiling(target: Target, endpoints: dict[str, str], senders: int, per_sender: int, progress: Progress) -> dict[str, Any]:
    measure: Callable[..., Awaitable[None]] = {
        "evm": _evm_ceiling,
        "evm-token": _evm_ceiling,
        "solana": _solana_ceiling,
        "stellar": _stellar_ceiling,
    }[target.name]
    task = progress.add_task(f"ceiling {target.label} (plain client)", total=senders * per_sender)
    started = time.perf_counter()
    await measure(target, endpoints, senders, per_sender, lambda: progress.advance(task))
    elapsed = time.perf_counter() - started
    total = senders * per_sender
    return {"senders": senders, "transfers": total, "seconds": elapsed, "per_second": total / elapsed}


async def _evm_ceiling(target: Target, endpoints: dict[str, str], senders: int, per_sender: int, advance: Callable[[], None]) -> None:
    """Plain web3: each sender signs, sends and waits for the receipt of the same transfer custody
    makes (ETH, or the token's `transfer`), one after another; all senders at once."""
    from eth_account import Account
    from web3 import AsyncHTTPProvider, AsyncWeb3

    from devnet import local

    web3 = AsyncWeb3(AsyncHTTPProvider(endpoints["anvil"]))
    accounts = [Account.create() for _ in range(senders)]
    for account in accounts:
        await web3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
    chain_id = await web3.eth.chain_id
    token = None
    if target.asset != "ETH":
        token = web3.eth.contract(address=endpoints["anvil_token"], abi=local.load_test_token_artifact()["abi"])
        minter = (await web3.eth.accounts)[0]
        for account in accounts:
            minted = await token.functions.mint(account.address, 10**12).transact({"from": minter})
            await web3.eth.wait_for_transaction_receipt(minted, timeout=60, poll_latency=0.01)

    async def sender(account: Any) -> None:
        nonce = await web3.eth.get_transaction_count(account.address)
        for _ in range(per_sender):
            block = await web3.eth.get_block("latest")
            tip = await web3.eth.max_priority_fee
            fees = {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * block["baseFeePerGas"] + tip, "type": 2, "chainId": chain_id, "nonce": nonce}
            if token is None:
                tx = {**fees, "to": Account.create().address, "value": 10**14, "gas": 21000}
            else:
                tx = await token.functions.transfer(Account.create().address, 10**4).build_transaction(
                    {**fees, "gas": 80000, "from": account.address}
                )
            signed = account.sign_transaction(tx)
            tx_hash = await web3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = await web3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.01)
            if receipt["status"] != 1:
                raise RuntimeError("ceiling transfer reverted")
            nonce += 1
            advance()

    try:
        await asyncio.gather(*(sender(a) for a in accounts))
    finally:
        await web3.provider.disconnect()


async def _solana_ceiling(target: Target, endpoints: dict[str, str], senders: int, per_sender: int, advance: Callable[[], None]) -> None:
    """Plain solana-py: each sender signs system transfers with a recent blockhash, sends them and
    polls their status until `finalized` (what custody waits for), all of them at once."""
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed
    from solders.keypair import Keypair
    from solders.message import Message
    from solders.system_program import TransferParams, transfer
    from solders.transaction import Transaction

    from devnet.local import solana_signature_reached

    async with AsyncClient(endpoints["solana"], commitment=Confirmed) as rpc:
        keys = [Keypair() for _ in range(senders)]
        for key in keys:
            await solana_signature_reached(rpc, (await rpc.request_airdrop(key.pubkey(), 10 * 10**9)).value, "confirmed", 120, poll_seconds=0.05)

        async def one(key: Keypair) -> None:
            recent = (await rpc.get_latest_blockhash(Confirmed)).value.blockhash
            instruction = transfer(TransferParams(from_pubkey=key.pubkey(), to_pubkey=Keypair().pubkey(), lamports=1_000_000))
            tx = Transaction([key], Message([instruction], key.pubkey()), recent)
            await solana_signature_reached(rpc, (await rpc.send_raw_transaction(bytes(tx))).value, "finalized", 120, poll_seconds=0.05)
            advance()

        async def sender(key: Keypair) -> None:
            # No nonce orders a Solana account's transfers: all of a sender's are in flight at once
            # (one after another, the ceiling would only measure the 32-slot wait for `finalized`).
            await asyncio.gather(*(one(key) for _ in range(per_sender)))

        await asyncio.gather(*(sender(k) for k in keys))


async def _stellar_ceiling(target: Target, endpoints: dict[str, str], senders: int, per_sender: int, advance: Callable[[], None]) -> None:
    """Plain stellar-sdk: each friendbot-funded sender signs a create_account of 1 XLM to a new
    account (custody's XLM withdrawal to a fresh address) and submits it; Horizon answers once the
    ledger that applied it closed (final)."""
    import httpx
    from stellar_sdk import Account, Keypair, TransactionBuilder

    horizon = endpoints["stellar"]
    passphrase = endpoints["stellar_passphrase"]
    async with httpx.AsyncClient(base_url=horizon, timeout=120) as http:
        keys = [Keypair.random() for _ in range(senders)]
        for key in keys:
            (await http.get("/friendbot", params={"addr": key.public_key})).raise_for_status()

        async def sender(key: Keypair) -> None:
            sequence = int((await http.get(f"/accounts/{key.public_key}")).json()["sequence"])
            for _ in range(per_sender):
                tx = (
                    TransactionBuilder(Account(key.public_key, sequence), network_passphrase=passphrase, base_fee=100)
                    .append_create_account_op(Keypair.random().public_key, "1")
                    .set_timeout(60)
                    .build()
                )
                tx.sign(key)
                response = await http.post("/transactions", data={"tx": tx.to_xdr()})
                if response.status_code != 200 or not response.json().get("successful", True):
                    raise RuntimeError(f"ceiling transfer refused: {response.text[:200]}")
                sequence += 1
                advance()

        await asyncio.gather(*(sender(k) for k in keys))
