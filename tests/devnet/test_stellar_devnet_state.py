"""The Stellar devnet with a state directory: stopped (SIGTERM) or killed (SIGKILL) and started again
on the same directory, it is the same network. Real processes (``python -m devnet.stellar``), the
real stellar-sdk ServerAsync; nothing is patched.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from stellar_sdk import Asset, Keypair, ServerAsync, TransactionBuilder
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import BadRequestError

from devnet.local import free_port, port_open
from devnet.stellar import DEFAULT_NETWORK_PASSPHRASE

ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = DEFAULT_NETWORK_PASSPHRASE


class DevnetProcess:
    """``python -m devnet.stellar --state-dir DIR`` on a fixed port, started and stopped at will."""

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
                    "devnet.stellar",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--state-dir",
                    str(self.state_dir),
                    "--close-interval-ms",
                    "100",
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
    process = DevnetProcess(tmp_path / "stellar", tmp_path / "stellar.log")
    process.start()
    yield process
    process.kill_if_running()


@asynccontextmanager
async def connected(devnet: DevnetProcess) -> AsyncIterator[tuple[ServerAsync, httpx.AsyncClient]]:
    async with ServerAsync(devnet.url, client=AiohttpClient()) as server, httpx.AsyncClient(base_url=devnet.url, timeout=30) as http:
        yield server, http


async def _fund(http: httpx.AsyncClient) -> Keypair:
    keypair = Keypair.random()
    reply = await http.get("/friendbot", params={"addr": keypair.public_key})
    assert reply.status_code == 200, reply.text
    return keypair


async def _submit(server: ServerAsync, source: Keypair, build: Any) -> dict[str, Any]:
    tx = build(TransactionBuilder(await server.load_account(source.public_key), PASSPHRASE, 100).set_timeout(300))
    tx = tx.build()
    tx.sign(source)
    return await server.submit_transaction(tx)


async def _snapshot(server: ServerAsync, keypairs: dict[str, Keypair]) -> dict[str, Any]:
    """Each account's sequence, balances and trustlines, as Horizon shows them."""
    out = {}
    for name, keypair in keypairs.items():
        account = await server.accounts().account_id(keypair.public_key).call()
        balances = sorted((b.get("asset_code", "XLM"), b["balance"], b.get("limit")) for b in account["balances"])
        out[name] = (account["sequence"], account["subentry_count"], balances)
    return out


async def _latest_ledger(http: httpx.AsyncClient) -> dict[str, Any]:
    return (await http.get("/ledgers", params={"order": "desc", "limit": 1})).json()["_embedded"]["records"][0]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_accounts_trustlines_sequences_and_transactions_survive_a_restart(devnet: DevnetProcess, stop: int) -> None:
    async with connected(devnet) as (server, http):
        issuer, alice, bob = await _fund(http), await _fund(http), await _fund(http)
        usd = Asset("USD", issuer.public_key)
        trust = await _submit(server, alice, lambda b: b.append_change_trust_op(usd, limit="1000"))
        paid_usd = await _submit(server, issuer, lambda b: b.append_payment_op(alice.public_key, usd, "100"))
        paid_xlm = await _submit(server, bob, lambda b: b.add_text_memo("rent").append_payment_op(alice.public_key, Asset.native(), "12.5"))
        # an applied transaction whose operation failed (no trustline): it consumed the issuer's fee and sequence
        failed_tx = TransactionBuilder(await server.load_account(issuer.public_key), PASSPHRASE, 100)
        failed_tx = failed_tx.set_timeout(300).append_payment_op(bob.public_key, usd, "1").build()
        failed_tx.sign(issuer)
        with pytest.raises(BadRequestError):
            await server.submit_transaction(failed_tx)
        # a fee bump: alice pays the fee of bob's payment; found by its own hash and the inner one
        inner = TransactionBuilder(await server.load_account(bob.public_key), PASSPHRASE, 100).set_timeout(300)
        inner = inner.append_payment_op(alice.public_key, Asset.native(), "1").build()
        inner.sign(bob)
        bump = TransactionBuilder.build_fee_bump_transaction(alice.public_key, 200, inner, PASSPHRASE)
        bump.sign(alice)
        bumped = await server.submit_transaction(bump)
        # signed now, submitted after the restart: bob's next sequence number must still be the next one
        later = TransactionBuilder(await server.load_account(bob.public_key), PASSPHRASE, 100).set_timeout(300)
        later = later.append_payment_op(alice.public_key, Asset.native(), "2").build()
        later.sign(bob)

        hashes = {
            "trust": trust["hash"],
            "usd": paid_usd["hash"],
            "xlm": paid_xlm["hash"],
            "failed": failed_tx.hash_hex(),
            "bump": bumped["hash"],
            "inner": inner.hash_hex(),
        }
        transactions = {name: (await http.get(f"/transactions/{h}")).json() for name, h in hashes.items()}
        assert transactions["failed"]["successful"] is False
        assert transactions["bump"]["hash"] == bump.hash_hex()
        assert transactions["inner"]["fee_bump_transaction"]["hash"] == bump.hash_hex()
        accounts = {"issuer": issuer, "alice": alice, "bob": bob}
        before = await _snapshot(server, accounts)
        alice_payments = (await http.get(f"/accounts/{alice.public_key}/payments", params={"limit": 200})).json()
        seen = await _latest_ledger(http)

    devnet.stop(stop)
    devnet.start()

    async with connected(devnet) as (server, http):
        # ledger numbers go on; the ledgers already seen are the same ledgers
        latest = await _latest_ledger(http)
        assert latest["sequence"] >= seen["sequence"]
        assert (await http.get(f"/ledgers/{seen['sequence']}")).json()["hash"] == seen["hash"]
        assert await _snapshot(server, accounts) == before
        for name, tx_hash in hashes.items():
            assert (await http.get(f"/transactions/{tx_hash}")).json() == transactions[name], name
        again = (await http.get(f"/accounts/{alice.public_key}/payments", params={"limit": 200})).json()
        assert again["_embedded"]["records"] == alice_payments["_embedded"]["records"]

        # re-sending an applied envelope is answered from history and applies nothing
        resent = await http.post("/transactions", data={"tx": transactions["usd"]["envelope_xdr"]})
        assert resent.status_code == 200 and resent.json()["hash"] == hashes["usd"]
        assert await _snapshot(server, accounts) == before

        # the envelope signed before the restart is bob's next transaction; new ones work too
        late = await server.submit_transaction(later)
        assert late["successful"] is True and int(late["ledger"]) > seen["sequence"]
        await _submit(server, alice, lambda b: b.append_payment_op(issuer.public_key, usd, "40"))
        after = await _snapshot(server, accounts)
        assert after["bob"][0] == str(int(before["bob"][0]) + 1)
        assert ("USD", "60.0000000", "1000.0000000") in after["alice"][2]
        newest = await _latest_ledger(http)

    devnet.stop(signal.SIGTERM)  # and once more: what was added after the first restart is kept too
    devnet.start()
    async with connected(devnet) as (server, http):
        assert (await _latest_ledger(http))["sequence"] >= newest["sequence"]
        assert (await http.get(f"/transactions/{late['hash']}")).json()["successful"] is True
        assert await _snapshot(server, accounts) == after
