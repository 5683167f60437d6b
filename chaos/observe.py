"""What the chaos run reads at its end, straight from the sources of truth: custody's database
(withdrawals, holds, nonce claims, signed attempts) and the real nodes (never through the fault
proxies): each destination's balance, and on anvil every block's transactions and each
sender's nonce. The checks (chaos/checks.py) then compare the two."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
READS = 16  # concurrent reads against one node


async def _bounded(calls: list[Callable[[], Awaitable[T]]]) -> list[T]:
    gate = asyncio.Semaphore(READS)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


# --- the database ---------------------------------------------------------------------------
async def read_database(database_url: str) -> dict[str, list[dict[str, Any]]]:
    import sqlalchemy as sa

    from db.engine import create_engine

    engine = create_engine(database_url, pool_size=1)
    queries = {
        "withdrawals": "SELECT id, wallet_id, chain, asset, kind, status, error_code, destination, amount::text AS amount,"
        " paused, nonce, tx_hash FROM withdrawals",
        "reservations": "SELECT withdrawal_id, state FROM reservations",
        "claims": "SELECT chain, sender, sequence, withdrawal_id, state FROM sequence_claims",
        "attempts": "SELECT withdrawal_id, chain, sender, sequence, tx_hash, purpose, state FROM transfer_attempts",
        "wallets": "SELECT id, chain, address, signer_backend FROM wallets",
    }
    try:
        async with engine.connect() as connection:
            return {name: [dict(row._mapping) for row in (await connection.execute(sa.text(sql))).all()] for name, sql in queries.items()}
    finally:
        await engine.dispose()


# --- anvil ----------------------------------------------------------------------------------
async def read_anvil(rpc_url: str, token: str, destinations: dict[str, str], senders: list[str]) -> dict[str, Any]:
    """Balances of the destinations (ETH or TUSD, by destination), each sender's nonce (latest
    and pending) and every mined transaction of the senders (hash, nonce), head to genesis."""
    from web3 import AsyncHTTPProvider, AsyncWeb3

    from chains.evm import ERC20_ABI

    web3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    contract = web3.eth.contract(address=web3.to_checksum_address(token), abi=ERC20_ABI)

    async def balance(address: str, asset: str) -> int:
        if asset == "ETH":
            return int(await web3.eth.get_balance(address))
        return int(await contract.functions.balanceOf(address).call())

    items = list(destinations.items())
    balances = await _bounded([lambda a=a, s=s: balance(a, s) for a, s in items])
    head = await web3.eth.block_number
    blocks = await _bounded([lambda n=n: web3.eth.get_block(n, full_transactions=True) for n in range(head + 1)])
    ours = {s.lower() for s in senders}
    mined: dict[str, list[dict[str, Any]]] = {s: [] for s in senders}
    by_lower = {s.lower(): s for s in senders}
    for block in blocks:
        for tx in block["transactions"]:
            sender = str(tx["from"]).lower()
            if sender in ours:
                mined[by_lower[sender]].append({"hash": "0x" + bytes(tx["hash"]).hex().removeprefix("0x"), "nonce": int(tx["nonce"])})
    nonces = {}
    for s in senders:
        nonces[s] = {
            "latest": int(await web3.eth.get_transaction_count(s, "latest")),
            "pending": int(await web3.eth.get_transaction_count(s, "pending")),
        }
    await web3.provider.disconnect()
    return {"balances": dict(zip([a for a, _ in items], balances, strict=True)), "mined": mined, "nonces": nonces, "head": head}


# --- Solana ---------------------------------------------------------------------------------
async def read_solana(rpc_url: str, mint: str, destinations: dict[str, str]) -> dict[str, int]:
    """Lamports (SOL) or TUSD base units (the associated token account) of each destination."""
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Finalized
    from solders.pubkey import Pubkey
    from spl.token.constants import TOKEN_PROGRAM_ID
    from spl.token.instructions import get_associated_token_address

    mint_key = Pubkey.from_string(mint)
    async with AsyncClient(rpc_url, commitment=Finalized, timeout=30) as rpc:

        async def balance(address: str, asset: str) -> int:
            owner = Pubkey.from_string(address)
            if asset == "SOL":
                return int((await rpc.get_balance(owner, Finalized)).value)
            ata = get_associated_token_address(owner, mint_key, TOKEN_PROGRAM_ID)
            if (await rpc.get_account_info(ata, Finalized)).value is None:
                return 0
            return int((await rpc.get_token_account_balance(ata, Finalized)).value.amount)

        items = list(destinations.items())
        values = await _bounded([lambda a=a, s=s: balance(a, s) for a, s in items])
    return dict(zip([a for a, _ in items], values, strict=True))


# --- Stellar --------------------------------------------------------------------------------
async def read_stellar(horizon_url: str, destinations: dict[str, str]) -> dict[str, int]:
    """Native balance in stroops of each destination (0 for an account that does not exist)."""
    async with httpx.AsyncClient(base_url=horizon_url, timeout=30) as http:

        async def balance(address: str) -> int:
            response = await http.get(f"/accounts/{address}")
            if response.status_code == 404:
                return 0
            response.raise_for_status()
            native = next(b for b in response.json()["balances"] if b["asset_type"] == "native")
            return int(Decimal(native["balance"]).scaleb(7))

        addresses = list(destinations)
        values = await _bounded([lambda a=a: balance(a) for a in addresses])
    return dict(zip(addresses, values, strict=True))
