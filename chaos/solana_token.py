"""The chaos run's SPL token on the Solana devnet: a classic SPL Token mint made with the
devnet's own SPL program, and tokens minted into custody wallets' associated token accounts
(deposits from outside, which reconciliation finds on chain). Talks to the node directly."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    initialize_mint2,
    mint_to_checked,
)
from spl.token.models import InitializeMint2Params, MintToCheckedParams

SOL = 10**9
MINT_SIZE = 82


async def _send(rpc: AsyncClient, payer: Keypair, instructions: list, signers: tuple = ()) -> None:  # type: ignore[type-arg]
    recent = (await rpc.get_latest_blockhash(Confirmed)).value.blockhash
    tx = Transaction.new_signed_with_payer(instructions, payer.pubkey(), [payer, *signers], recent)
    signature = (await rpc.send_transaction(tx, TxOpts(preflight_commitment=Confirmed))).value
    for _ in range(200):
        status = (await rpc.get_signature_statuses([signature])).value[0]
        if status is not None:
            if status.err is not None:
                raise RuntimeError(f"SPL setup transaction failed: {status.err}")
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("SPL setup transaction did not land")


def _authority(path: Path) -> Keypair:
    return Keypair.from_bytes(bytes(json.loads(path.read_text())))


async def create_mint(rpc_url: str, authority_file: Path, decimals: int) -> str:
    """A new mint whose authority's key is kept in `authority_file`; returns the mint address."""
    authority, mint = Keypair(), Keypair()
    authority_file.write_text(json.dumps(list(bytes(authority))))
    async with AsyncClient(rpc_url, commitment=Confirmed) as rpc:
        signature = (await rpc.request_airdrop(authority.pubkey(), 100 * SOL)).value
        for _ in range(200):
            if (await rpc.get_signature_statuses([signature])).value[0] is not None:
                break
            await asyncio.sleep(0.05)
        rent = (await rpc.get_minimum_balance_for_rent_exemption(MINT_SIZE)).value
        await _send(
            rpc,
            authority,
            [
                create_account(
                    CreateAccountParams(
                        from_pubkey=authority.pubkey(), to_pubkey=mint.pubkey(), lamports=rent, space=MINT_SIZE, owner=TOKEN_PROGRAM_ID
                    )
                ),
                initialize_mint2(
                    InitializeMint2Params(decimals=decimals, program_id=TOKEN_PROGRAM_ID, mint=mint.pubkey(), mint_authority=authority.pubkey())
                ),
            ],
            (mint,),
        )
    return str(mint.pubkey())


async def mint_to(rpc_url: str, authority_file: Path, mint: str, owner: str, amount: int, decimals: int) -> None:
    """Mint `amount` base units into `owner`'s associated token account (made if missing)."""
    authority = _authority(authority_file)
    mint_key, owner_key = Pubkey.from_string(mint), Pubkey.from_string(owner)
    async with AsyncClient(rpc_url, commitment=Confirmed) as rpc:
        await _send(
            rpc,
            authority,
            [
                create_idempotent_associated_token_account(authority.pubkey(), owner_key, mint_key, TOKEN_PROGRAM_ID),
                mint_to_checked(
                    MintToCheckedParams(
                        program_id=TOKEN_PROGRAM_ID,
                        mint=mint_key,
                        dest=get_associated_token_address(owner_key, mint_key, TOKEN_PROGRAM_ID),
                        mint_authority=authority.pubkey(),
                        amount=amount,
                        decimals=decimals,
                    )
                ),
            ],
        )
