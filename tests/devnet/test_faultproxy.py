"""devnet/faultproxy.py in front of real nodes: anvil's JSON-RPC, the Solana devnet's JSON-RPC,
the Stellar devnet's Horizon. Each fault is seen through the clients custody uses (web3, solana-py,
stellar-sdk), and the node is read directly to show what it really did."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solders.keypair import Keypair as SolanaKeypair
from stellar_sdk import Keypair, ServerAsync, TransactionBuilder
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.exceptions import BadResponseError
from stellar_sdk.exceptions import ConnectionError as HorizonConnectionError
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import Web3RPCError

from devnet import local
from devnet.faultproxy import FaultProxy
from devnet.solana import SolanaDevnet
from devnet.stellar import StellarDevnet, run_stellar_devnet

RESET_ERRORS = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


_opened: list[AsyncWeb3] = []


def web3_at(url: str, timeout: float = 10) -> AsyncWeb3:
    web3 = AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": timeout}))
    _opened.append(web3)
    return web3


@pytest.fixture(autouse=True)
async def _close_web3_sessions() -> AsyncIterator[None]:
    yield
    while _opened:
        await _opened.pop().provider.disconnect()


@pytest.fixture
async def proxy(anvil: local.ManagedProcess) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(anvil.info["rpc_url"], seed=7) as p:
        yield p


# Overrides conftest's stellar_devnet (the Solana one is conftest's): the devnet's default 30 s
# submission timeout, and no USDX issuer funded.
@pytest.fixture(scope="module")
async def stellar_devnet() -> AsyncIterator[StellarDevnet]:
    async with run_stellar_devnet(port=0, close_interval_ms=100) as d:
        yield d


# ----------------------------------------------------------------------------- anvil


async def test_forwards_untouched_without_rules(proxy: FaultProxy, anvil: local.ManagedProcess) -> None:
    through, direct = web3_at(proxy.url), web3_at(anvil.info["rpc_url"])
    assert await through.eth.chain_id == await direct.eth.chain_id == 31337
    assert await through.eth.get_balance((await direct.eth.accounts)[0]) > 0
    snapshot = proxy.snapshot()
    assert snapshot["forwarded"] == snapshot["requests"] == 2
    assert snapshot["injected"] == {} and snapshot["seen"]["eth_chainId"] == 1


# web3 retries allow-listed reads (eth_chainId, eth_getBalance...) by itself on errors; these
# tests use web3_clientVersion, which it does not retry, to see each fault once.


async def test_http_error_for_the_next_n_matching_calls(proxy: FaultProxy) -> None:
    proxy.add(action="error", status=503, rpc_method="web3_clientVersion", count=2)
    web3 = web3_at(proxy.url)
    for _ in range(2):
        with pytest.raises(aiohttp.ClientResponseError) as error:
            await web3.client_version
        assert error.value.status == 503
    assert await web3.eth.chain_id == 31337  # another method: untouched
    assert "anvil" in (await web3.client_version).lower()  # the count is spent: forwarded again
    snapshot = proxy.snapshot()
    assert snapshot["injected"] == {"error": 2}
    assert snapshot["rules"] == []  # a spent rule is gone; its counts stay
    assert snapshot["seen"]["web3_clientVersion"] == 3


async def test_connection_reset_without_an_answer(proxy: FaultProxy) -> None:
    proxy.add(action="reset", rpc_method="web3_clientVersion", count=1)
    web3 = web3_at(proxy.url)
    with pytest.raises(RESET_ERRORS):
        await web3.client_version
    assert await web3.eth.chain_id == 31337
    assert proxy.injected("reset") == 1 and proxy.snapshot()["forwarded"] == 1


async def test_hang_until_the_client_times_out(proxy: FaultProxy) -> None:
    proxy.add(action="hang", rpc_method="web3_clientVersion", count=1)
    with pytest.raises(asyncio.TimeoutError):
        await web3_at(proxy.url, timeout=0.5).client_version
    assert proxy.injected("hang") == 1 and proxy.snapshot()["forwarded"] == 0


async def test_hang_for_a_while_then_reset(proxy: FaultProxy) -> None:
    proxy.add(action="hang", seconds=0.2, count=1)
    with pytest.raises(RESET_ERRORS):
        await web3_at(proxy.url, timeout=30).client_version
    assert proxy.snapshot()["forwarded"] == 0


async def test_dropped_response_after_the_node_accepted_the_transaction(proxy: FaultProxy, anvil: local.ManagedProcess) -> None:
    direct = web3_at(anvil.info["rpc_url"])
    sender = (await direct.eth.accounts)[1]
    nonce = await direct.eth.get_transaction_count(sender)
    proxy.add(action="drop_response", rpc_method="eth_sendTransaction", count=1)
    with pytest.raises(RESET_ERRORS):
        await web3_at(proxy.url).eth.send_transaction({"from": sender, "to": sender, "value": 1})
    # The client heard nothing, yet the node took the transaction and mined it.
    assert await direct.eth.get_transaction_count(sender) == nonce + 1
    snapshot = proxy.snapshot()
    assert proxy.injected("drop_response") == 1 and snapshot["forwarded"] == snapshot["requests"]


async def test_added_latency_still_answers(proxy: FaultProxy) -> None:
    proxy.add(action="delay", seconds=0.1, rpc_method="eth_chainId", count=1)
    assert await web3_at(proxy.url).eth.chain_id == 31337
    assert proxy.injected("delay") == 1 and proxy.snapshot()["forwarded"] == 1


async def test_rpc_error_for_one_call_inside_a_batch(proxy: FaultProxy) -> None:
    proxy.add(
        action="respond",
        rpc_method="eth_sendRawTransaction",
        rpc_error={"code": -32000, "message": "transaction gas price below minimum: gas tip cap 1, minimum needed 25000000000"},
    )
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_sendRawTransaction", "params": ["0x00"]},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_blockNumber", "params": []},
    ]
    async with httpx.AsyncClient() as http:
        answers = (await http.post(proxy.url, json=batch)).json()
        single = (await http.post(proxy.url, json=batch[1])).json()
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["result"] == "0x7a69" and "result" in answers[2]  # from anvil
    assert "below minimum" in answers[1]["error"]["message"]
    assert single["id"] == 2 and "below minimum" in single["error"]["message"]
    # web3 reads the injected error as the node's own answer.
    with pytest.raises(Web3RPCError, match="below minimum"):
        await web3_at(proxy.url).eth.send_raw_transaction(b"\x00")
    assert proxy.seen("eth_sendRawTransaction") == 3 and proxy.seen("eth_chainId") == 1


async def test_probability_is_seeded_and_counted(anvil: local.ManagedProcess) -> None:
    async def run(seed: int) -> list[bool]:
        async with FaultProxy(anvil.info["rpc_url"], seed=seed) as p:
            p.add(action="error", status=502, probability=0.5, rpc_method="web3_clientVersion")
            web3, failed = web3_at(p.url), []
            for _ in range(30):
                try:
                    await web3.client_version
                    failed.append(False)
                except aiohttp.ClientResponseError:
                    failed.append(True)
            assert p.injected("error") == sum(failed)
            assert p.snapshot()["rules"][0]["matched"] == 30
            return failed

    first = await run(11)
    assert 0 < sum(first) < 30
    assert await run(11) == first  # same seed, same faults


async def test_rules_set_and_cleared_while_running(proxy: FaultProxy) -> None:
    web3 = web3_at(proxy.url)
    name = proxy.add(action="error", status=500)
    with pytest.raises(aiohttp.ClientResponseError):
        await web3.client_version
    assert proxy.remove(name) and not proxy.remove(name)
    assert await web3.eth.chain_id == 31337
    proxy.add(action="reset", name="flaky")
    with pytest.raises(ValueError, match="exists already"):
        proxy.add(action="error", name="flaky")
    proxy.clear(counters=True)
    assert await web3.eth.chain_id == 31337
    assert proxy.snapshot()["requests"] == 1 and proxy.injected() == 0


@pytest.mark.parametrize(
    "rule, message",
    [
        ({"action": "explode"}, "action must be"),
        ({"action": "delay"}, "needs seconds"),
        ({"action": "error", "probability": 0}, "probability"),
        ({"action": "reset", "count": 0}, "count"),
        ({"action": "reset", "http": "POST transactions"}, "http is"),
        ({"action": "respond"}, "respond needs"),
        ({"action": "reset", "colour": "red"}, "unknown rule fields"),
    ],
)
def test_bad_rules_are_refused(rule: dict, message: str) -> None:
    proxy = FaultProxy("http://127.0.0.1:1")
    with pytest.raises(ValueError, match=message):
        proxy.add(rule)
    assert proxy.snapshot()["rules"] == []


async def test_control_routes_of_the_process(anvil: local.ManagedProcess) -> None:
    port = local.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "devnet.faultproxy", "--target", anvil.info["rpc_url"], "--port", str(port), "--seed", "1"],
        cwd=local.ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(200):
                try:
                    assert (await http.get("/_faults")).status_code == 200
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            added = await http.post("/_faults", json=[{"action": "error", "status": 429, "rpc_method": "web3_clientVersion", "count": 1}])
            assert added.status_code == 200 and len(added.json()["added"]) == 1
            refused = await http.post("/_faults", json={"action": "hang", "count": -1})
            assert refused.status_code == 400 and "count" in refused.json()["error"]
            with pytest.raises(aiohttp.ClientResponseError) as error:
                await web3_at(url).client_version
            assert error.value.status == 429
            assert await web3_at(url).eth.chain_id == 31337
            state = (await http.get("/_faults")).json()
            assert state["injected"] == {"error": 1} and state["forwarded"] == 1 and state["rules"] == []
            assert state["target"] == anvil.info["rpc_url"].removeprefix("http://")
            name = (await http.post("/_faults", json={"action": "reset"})).json()["added"][0]
            assert (await http.delete(f"/_faults/{name}")).json()["rules"] == []
            assert (await http.delete("/_faults/nope")).status_code == 404
            await http.post("/_faults", json={"action": "reset"})
            cleared = (await http.delete("/_faults", params={"counters": "1"})).json()
            assert cleared["rules"] == [] and cleared["requests"] == 0 and cleared["injected"] == {}
    finally:
        process.terminate()
        process.wait(10)


async def test_a_stopped_proxy_is_a_dead_endpoint(anvil: local.ManagedProcess) -> None:
    proxy = FaultProxy(anvil.info["rpc_url"])
    await asyncio.to_thread(proxy.start)
    assert await web3_at(proxy.url).eth.chain_id == 31337
    await asyncio.to_thread(proxy.stop)
    with pytest.raises(aiohttp.ClientConnectorError):
        await web3_at(proxy.url).client_version


async def test_unreachable_node_is_a_502(anvil: local.ManagedProcess) -> None:
    async with FaultProxy(f"http://127.0.0.1:{local.free_port()}") as proxy:
        with pytest.raises(aiohttp.ClientResponseError) as error:
            await web3_at(proxy.url).client_version
        assert error.value.status == 502 and proxy.snapshot()["upstream_errors"] == 1


# ----------------------------------------------------------------------------- Solana devnet


async def test_solana_json_rpc_faults(solana_devnet: SolanaDevnet) -> None:
    async with FaultProxy(solana_devnet.url) as proxy:
        async with AsyncClient(proxy.url, commitment=Confirmed, timeout=10) as client:
            owner = SolanaKeypair().pubkey()
            resets = proxy.add(action="reset", rpc_method="getBalance")  # (httpx re-sends once on a reset)
            with pytest.raises(SolanaRpcException):
                await client.get_balance(owner)
            proxy.remove(resets)
            assert (await client.get_balance(owner)).value == 0
            proxy.add(action="respond", rpc_method="getBlockHeight", rpc_result=10**9, count=1)
            assert (await client.get_block_height()).value == 10**9  # a lying node, for verdict tests
            assert (await client.get_block_height()).value < 10**9
            behind = {"code": -32005, "message": "Node is behind by 42 slots", "data": {"numSlotsBehind": 42}}
            proxy.add(action="respond", rpc_method="requestAirdrop", rpc_error=behind)
            with pytest.raises(RPCException, match="behind"):
                await client.request_airdrop(owner, 1)
        async with httpx.AsyncClient() as http:
            proxy.add(action="error", status=503, http="GET /health", count=1)
            assert (await http.get(proxy.url + "/health")).status_code == 503
            assert (await http.get(proxy.url + "/health")).text == "ok"
        snapshot = proxy.snapshot()
        assert snapshot["injected"]["reset"] >= 1 and snapshot["injected"]["error"] == 1
        assert snapshot["injected"]["respond"] == 2
        assert snapshot["seen"]["GET /health"] == 2


# ----------------------------------------------------------------------------- Stellar devnet


async def test_horizon_faults_by_http_path(stellar_devnet: StellarDevnet) -> None:
    root = stellar_devnet.root_keypair
    destination = Keypair.random()
    async with FaultProxy(stellar_devnet.url) as proxy, ServerAsync(proxy.url, client=AiohttpClient()) as server:
        async with ServerAsync(stellar_devnet.url, client=AiohttpClient()) as direct:
            proxy.add(action="error", status=502, http="GET /accounts", count=1)
            with pytest.raises(BadResponseError):
                await server.load_account(root.public_key)
            source = await server.load_account(root.public_key)  # the path and query reach Horizon
            envelope = (
                TransactionBuilder(source, stellar_devnet.network_passphrase, base_fee=100)
                .append_create_account_op(destination.public_key, "5")
                .set_timeout(60)
                .build()
            )
            envelope.sign(root)
            # Horizon took the transaction and it applied; the client only sees the reset.
            proxy.add(action="drop_response", http="POST /transactions", count=1)
            with pytest.raises(HorizonConnectionError):
                await server.submit_transaction(envelope)
            landed = await direct.transactions().transaction(envelope.hash_hex()).call()
            assert landed["successful"] is True
            assert any(b["asset_type"] == "native" for b in (await direct.accounts().account_id(destination.public_key).call())["balances"])
    snapshot = proxy.snapshot()
    assert snapshot["injected"] == {"error": 1, "drop_response": 1}
    assert snapshot["seen"]["POST /transactions"] == 1 and snapshot["seen"]["GET /accounts"] == 2


async def test_connections_counts_the_client_connections_that_carried_requests(proxy: FaultProxy) -> None:
    web3 = web3_at(proxy.url)  # web3's default session closes its connection after each call
    for _ in range(3):
        await web3.eth.block_number
    assert proxy.snapshot()["connections"] == 3
    proxy.clear(counters=True)
    async with aiohttp.ClientSession() as kept_alive:
        for i in range(3):
            async with kept_alive.post(proxy.url, json={"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber", "params": []}) as answer:
                assert answer.status == 200
    assert proxy.snapshot()["connections"] == 1 and proxy.snapshot()["requests"] == 3
