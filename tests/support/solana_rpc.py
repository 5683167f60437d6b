"""The Solana devnet through the real solana-py client (tests/devnet/test_solana_devnet*.py):
funded keypairs, signed transactions, a mint, and what the client reads back."""

from __future__ import annotations

from typing import Any

import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.hash import Hash
from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import MessageV0
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.signature import Signature
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import VersionedTransaction
from spl.token.instructions import initialize_mint2
from spl.token.models import InitializeMint2Params

SOL = 1_000_000_000
CONFIRMED_PREFLIGHT = TxOpts(preflight_commitment=Confirmed)


async def funded(client: AsyncClient, lamports: int = 10 * SOL) -> Keypair:
    kp = Keypair()
    await client.request_airdrop(kp.pubkey(), lamports)
    assert (await client.get_balance(kp.pubkey())).value == lamports
    return kp


async def blockhash(client: AsyncClient) -> tuple[Hash, int]:
    value = (await client.get_latest_blockhash(Confirmed)).value
    return value.blockhash, value.last_valid_block_height


def sign(payer: Keypair, instructions: list[Instruction], recent: Hash, extra: tuple[Keypair, ...] = ()) -> VersionedTransaction:
    return VersionedTransaction(MessageV0.try_compile(payer.pubkey(), instructions, [], recent), [payer, *extra])


def sol_transfer(payer: Keypair, to: Pubkey, lamports: int, recent: Hash) -> VersionedTransaction:
    return sign(payer, [transfer(TransferParams(from_pubkey=payer.pubkey(), to_pubkey=to, lamports=lamports))], recent)


async def get_tx(client: AsyncClient, sig: Signature, commitment: Any = Confirmed) -> Any:
    return (await client.get_transaction(sig, commitment=commitment, max_supported_transaction_version=0)).value


def preflight_error(exc: pytest.ExceptionInfo[RPCException]) -> SendTransactionPreflightFailureMessage:
    err = exc.value.args[0]
    assert isinstance(err, SendTransactionPreflightFailureMessage), err
    return err


async def status(client: AsyncClient, sig: Signature) -> Any:
    return (await client.get_signature_statuses([sig], search_transaction_history=True)).value[0]


async def create_mint(client: AsyncClient, payer: Keypair, program: Pubkey, decimals: int) -> Pubkey:
    mint = Keypair()
    rent = (await client.get_minimum_balance_for_rent_exemption(82)).value
    recent, _ = await blockhash(client)
    tx = sign(
        payer,
        [
            create_account(CreateAccountParams(from_pubkey=payer.pubkey(), to_pubkey=mint.pubkey(), lamports=rent, space=82, owner=program)),
            initialize_mint2(InitializeMint2Params(decimals=decimals, program_id=program, mint=mint.pubkey(), mint_authority=payer.pubkey())),
        ],
        recent,
        (mint,),
    )
    await client.send_transaction(tx, CONFIRMED_PREFLIGHT)
    return mint.pubkey()
