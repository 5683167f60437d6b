"""The Solana devnet with a state directory: stopped (SIGTERM) or killed (SIGKILL) and started again
on the same directory, it is the same chain. Real processes (``python -m devnet.solana``), the real
solana-py client; nothing is patched.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed, Finalized
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction_status import TransactionErrorFieldless
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import (
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to_checked,
    transfer_checked,
)
from spl.token.models import MintToCheckedParams, TransferCheckedParams

from devnet.local import free_port, port_open
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

ROOT = Path(__file__).resolve().parents[2]


class DevnetProcess:
    """``python -m devnet.solana --state-dir DIR`` on a fixed port, started and stopped at will."""

    def __init__(self, state_dir: Path, log_path: Path) -> None:
        self.state_dir = state_dir
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "devnet.solana",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--state-dir",
                    str(self.state_dir),
                    "--ledger-slot-ms",
                    "50",
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not port_open(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the devnet did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        code = self.process.wait(30)
        if signum == signal.SIGKILL:
            assert code == -signal.SIGKILL
        else:  # a clean stop (uvicorn re-raises the signal once it has shut down): the store was closed
            assert code in (0, -signal.SIGTERM), self.log_path.read_text()
            assert not list(self.state_dir.glob("*-wal")), "the devnet did not close its state file"

    def kill_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def devnet(tmp_path: Path) -> Iterator[DevnetProcess]:
    process = DevnetProcess(tmp_path / "solana", tmp_path / "solana.log")
    process.start()
    yield process
    process.kill_if_running()


@contextlib.asynccontextmanager
async def connected(devnet: DevnetProcess) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(devnet.url, commitment=Confirmed) as client:
        yield client


async def _call(devnet: DevnetProcess, method: str, params: list[Any] | None = None) -> Any:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    async with httpx.AsyncClient() as http:
        reply = (await http.post(devnet.url, json=body)).json()
    assert "result" in reply, reply
    return reply["result"]


async def _token_balance(client: AsyncClient, account: Pubkey) -> str:
    return (await client.get_token_account_balance(account, Confirmed)).value.amount


async def _statuses(client: AsyncClient, signatures: list[Signature]) -> list[tuple[int, object]]:
    values = (await client.get_signature_statuses(signatures, search_transaction_history=True)).value
    assert all(v is not None for v in values), values
    return [(v.slot, v.err) for v in values]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_accounts_tokens_history_and_block_height_survive_a_restart(devnet: DevnetProcess, stop: int) -> None:
    payer, recipient = Keypair(), Keypair()
    async with connected(devnet) as client:
        # the first blockhash this chain gave out, then made old: it must stay dead across restarts
        first_blockhash = (await client.get_latest_blockhash(Finalized)).value.blockhash
        await _call(devnet, "devnet_expireBlockhashes")

        payer = await funded(client, 10 * SOL)
        recent, _ = await blockhash(client)
        sol_sig = (await client.send_transaction(sol_transfer(payer, recipient.pubkey(), 2 * SOL, recent), CONFIRMED_PREFLIGHT)).value
        mint = await create_mint(client, payer, TOKEN_PROGRAM_ID, decimals=6)
        source = get_associated_token_address(payer.pubkey(), mint, TOKEN_PROGRAM_ID)
        dest = get_associated_token_address(recipient.pubkey(), mint, TOKEN_PROGRAM_ID)
        recent, _ = await blockhash(client)
        token_sig = (
            await client.send_transaction(
                sign(
                    payer,
                    [
                        create_idempotent_associated_token_account(payer.pubkey(), payer.pubkey(), mint, TOKEN_PROGRAM_ID),
                        mint_to_checked(
                            MintToCheckedParams(
                                program_id=TOKEN_PROGRAM_ID,
                                mint=mint,
                                dest=source,
                                mint_authority=payer.pubkey(),
                                amount=5_000_000,
                                decimals=6,
                            )
                        ),
                        create_idempotent_associated_token_account(payer.pubkey(), recipient.pubkey(), mint, TOKEN_PROGRAM_ID),
                        transfer_checked(
                            TransferCheckedParams(
                                program_id=TOKEN_PROGRAM_ID,
                                source=source,
                                mint=mint,
                                dest=dest,
                                owner=payer.pubkey(),
                                amount=1_234_500,
                                decimals=6,
                            )
                        ),
                    ],
                    recent,
                ),
                CONFIRMED_PREFLIGHT,
            )
        ).value
        # a transaction that failed in execution lands too (it paid its fee): its error must come back
        recent, _ = await blockhash(client)
        failed_sig = (await client.send_transaction(sol_transfer(payer, recipient.pubkey(), 1_000 * SOL, recent), TxOpts(skip_preflight=True))).value
        # signed now, sent only after the restart: its blockhash is recent and must still be accepted
        recent, last_valid = await blockhash(client)
        signed_before = sol_transfer(payer, recipient.pubkey(), 7, recent)

        before = {
            "payer": (await client.get_balance(payer.pubkey())).value,
            "recipient": (await client.get_balance(recipient.pubkey())).value,
            "source": await _token_balance(client, source),
            "dest": await _token_balance(client, dest),
            "supply": (await client.get_token_supply(mint, Confirmed)).value.amount,
        }
        statuses = await _statuses(client, [sol_sig, token_sig, failed_sig])
        assert statuses[2][1] is not None  # InstructionError: insufficient lamports
        token_meta = (await get_tx(client, token_sig)).transaction.meta
        height_before = (await client.get_block_height(Confirmed)).value
        slot_before = (await client.get_slot(Confirmed)).value
    assert before == {"payer": before["payer"], "recipient": 2 * SOL, "source": "3765500", "dest": "1234500", "supply": "5000000"}

    devnet.stop(stop)
    devnet.start()

    async with connected(devnet) as client:
        # the chain goes on from where it was: never back to a slot or height it had served
        assert (await client.get_block_height(Confirmed)).value >= height_before
        assert (await client.get_slot(Confirmed)).value >= slot_before
        after = {
            "payer": (await client.get_balance(payer.pubkey())).value,
            "recipient": (await client.get_balance(recipient.pubkey())).value,
            "source": await _token_balance(client, source),
            "dest": await _token_balance(client, dest),
            "supply": (await client.get_token_supply(mint, Confirmed)).value.amount,
        }
        assert after == before
        assert await _statuses(client, [sol_sig, token_sig, failed_sig]) == statuses
        restored_meta = (await get_tx(client, token_sig)).transaction.meta
        assert restored_meta.post_token_balances == token_meta.post_token_balances
        assert restored_meta.fee == token_meta.fee and restored_meta.log_messages == token_meta.log_messages
        assert restored_meta.inner_instructions == token_meta.inner_instructions != []
        history = (await client.get_signatures_for_address(recipient.pubkey(), commitment=Confirmed)).value
        assert {sol_sig, token_sig} <= {entry.signature for entry in history}

        # the transaction signed before the restart lands: its blockhash window was kept
        assert (await client.get_block_height(Confirmed)).value <= last_valid
        late_sig = (await client.send_transaction(signed_before, CONFIRMED_PREFLIGHT)).value
        assert (await status(client, late_sig)).err is None

        # the old blockhash stays dead, now and later (a fresh SVM would hand the same blockhashes out again,
        # from its first new slot on)
        for count in (1, 200):
            await _call(devnet, "devnet_advanceSlots", [{"count": count}])
            valid = await _call(devnet, "isBlockhashValid", [str(first_blockhash), {"commitment": "processed"}])
            assert valid["value"] is False
            with pytest.raises(RPCException) as refused:
                await client.send_transaction(sol_transfer(payer, recipient.pubkey(), 1, first_blockhash), CONFIRMED_PREFLIGHT)
            assert preflight_error(refused).data.err == TransactionErrorFieldless.BlockhashNotFound

        # and new transfers work: SOL and the token
        recent, _ = await blockhash(client)
        new_sig = (
            await client.send_transaction(
                sign(
                    payer,
                    [
                        transfer_checked(
                            TransferCheckedParams(
                                program_id=TOKEN_PROGRAM_ID,
                                source=source,
                                mint=mint,
                                dest=dest,
                                owner=payer.pubkey(),
                                amount=500,
                                decimals=6,
                            )
                        ),
                    ],
                    recent,
                ),
                CONFIRMED_PREFLIGHT,
            )
        ).value
        assert (await status(client, new_sig)).err is None
        assert await _token_balance(client, dest) == "1235000"
        assert (await client.get_balance(recipient.pubkey())).value == 2 * SOL + 7
        height_second = (await client.get_block_height(Confirmed)).value

    devnet.stop(signal.SIGTERM)  # and once more: what was added after the first restart is kept too
    devnet.start()
    async with connected(devnet) as client:
        assert (await client.get_block_height(Confirmed)).value >= height_second
        assert (await status(client, new_sig)).err is None and (await status(client, late_sig)).err is None
        assert await _token_balance(client, dest) == "1235000"
