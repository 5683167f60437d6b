"""RPC failover (chains/failover.py, chains/health.py) with two endpoints per chain, each behind a
fault proxy (devnet/faultproxy.py) in front of the SAME real node: anvil, the Solana devnet, the
Stellar devnet. Faults are injected on the wire; the chain is read directly to check what
really happened (one transfer, landed once)."""

from __future__ import annotations

import asyncio
import inspect
import typing
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, ClassVar

import httpx
import pytest
from eth_account import Account
from eth_keys import keys as eth_keys
from prometheus_client import REGISTRY
from solana.rpc.async_api import AsyncClient
from solders.keypair import Keypair as SolanaKeypair
from solders.pubkey import Pubkey
from stellar_sdk import Keypair as StellarKeypair
from web3 import AsyncHTTPProvider, AsyncWeb3

from chains.base import Chain, SignedTransfer, TransferIntent
from chains.evm import EvmChain
from chains.failover import FailoverChain
from chains.health import BreakerState, CircuitBreaker, endpoint_label
from chains.registry import ChainRegistry, build_chain
from core.errors import ChainUnavailable, FeeTooLow, InsufficientFunds
from core.settings import (
    EvmChainSettings,
    FailoverSettings,
    Settings,
    SolanaChainSettings,
    StellarChainSettings,
)
from devnet import local
from devnet.faultproxy import FaultProxy
from devnet.solana import SolanaDevnet
from devnet.stellar import StellarDevnet, run_stellar_devnet
from models.payloads import OnChainState
from tests.conftest import ALICE, create_wallet, fund, random_address, wait_for_status, withdraw

ETH = 10**18
SOL = 10**9
XLM = 10**7
# Small numbers so breakers open and time out quickly; the cool-down is long unless a test
# wants the half-open trial.
FAST = FailoverSettings(failure_threshold=2, cooldown_seconds=600, request_timeout_seconds=2, broadcast_grace_seconds=2)


def dead_url() -> str:
    """An endpoint that refuses connections (nothing listens there)."""
    return f"http://127.0.0.1:{local.free_port()}"


def up(chain: str, endpoint: str) -> float | None:
    return REGISTRY.get_sample_value("custody_rpc_endpoint_up", {"chain": chain, "endpoint": endpoint})


def failures(chain: str, endpoint: str) -> float:
    return REGISTRY.get_sample_value("custody_rpc_endpoint_failures_total", {"chain": chain, "endpoint": endpoint}) or 0.0


def states(chain: FailoverChain) -> list[str]:
    return [e["state"] for e in chain.health()]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


_built: list[FailoverChain] = []


def built(chain: Chain) -> FailoverChain:
    assert isinstance(chain, FailoverChain)
    _built.append(chain)
    return chain


@pytest.fixture(autouse=True)
async def _close_http_pools() -> AsyncIterator[None]:
    yield
    while _built:
        chain = _built.pop()
        await chain.close()
        for endpoint in chain.endpoints:
            if isinstance(endpoint.adapter, EvmChain):
                await endpoint.adapter.web3.provider.disconnect()


async def pair(target: str) -> tuple[FaultProxy, FaultProxy]:
    first, second = FaultProxy(target, seed=1), FaultProxy(target, seed=2)
    await asyncio.to_thread(first.start)
    await asyncio.to_thread(second.start)
    return first, second


async def stop(*proxies: FaultProxy) -> None:
    for proxy in proxies:
        await asyncio.to_thread(proxy.stop)


# ============================================================================ breaker and settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_n_consecutive_failures_and_probes_after_the_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_seconds=30, clock=clock)
    for _ in range(2):
        breaker.acquire().failed()  # type: ignore[union-attr]
    breaker.acquire().answered()  # type: ignore[union-attr]  # an answer resets the count
    for _ in range(2):
        breaker.acquire().failed()  # type: ignore[union-attr]
    assert breaker.state == BreakerState.CLOSED and breaker.consecutive_failures == 2
    breaker.acquire().failed()  # type: ignore[union-attr]
    assert breaker.state == BreakerState.OPEN and breaker.acquire() is None and not breaker.available
    clock.now += 29
    assert breaker.acquire() is None
    clock.now += 1
    trial = breaker.acquire()
    assert trial is not None and trial.trial and breaker.state == BreakerState.HALF_OPEN
    assert breaker.acquire() is None  # one trial at a time
    trial.failed()
    assert breaker.state == BreakerState.OPEN and breaker.acquire() is None  # a new cool-down
    clock.now += 30
    trial = breaker.acquire()
    assert trial is not None
    trial.release()  # cancelled: no verdict, the next call is the trial
    assert breaker.state == BreakerState.HALF_OPEN
    trial = breaker.acquire()
    assert trial is not None
    trial.answered()
    assert breaker.state == BreakerState.CLOSED and breaker.acquire() is not None


def test_a_forced_call_that_answers_closes_an_open_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_seconds=60, clock=Clock())
    breaker.acquire().failed()  # type: ignore[union-attr]
    assert breaker.state == BreakerState.OPEN
    permit = breaker.force()
    permit.answered()
    permit.failed()  # a permit reports once
    assert breaker.state == BreakerState.CLOSED


def test_endpoint_labels_carry_no_secret() -> None:
    assert endpoint_label(0, "https://polygon-mainnet.g.alchemy.com/v2/SECRETKEY") == "0-polygon-mainnet.g.alchemy.com"
    assert endpoint_label(1, "https://user:pw@rpc.example.com:8443/?apikey=SECRET") == "1-rpc.example.com:8443"
    assert endpoint_label(2, "http://[::1]:8545") == "2-[::1]:8545"


def test_settings_take_a_list_of_endpoints_and_keep_the_single_url_form() -> None:
    one = EvmChainSettings(chain_id=1, rpc_url="http://a:8545")
    assert one.endpoint_urls() == ["http://a:8545"] and one.rpc_urls == []
    several = EvmChainSettings(chain_id=1, rpc_urls=["http://a:8545", "http://b:8545"])
    assert several.rpc_url == "http://a:8545" and several.endpoint_urls() == ["http://a:8545", "http://b:8545"]
    assert several.for_endpoint("http://b:8545").endpoint_urls() == ["http://b:8545"]
    assert EvmChainSettings(chain_id=1, rpc_url="http://a:8545", rpc_urls=["http://a:8545", "http://b"]).rpc_url == "http://a:8545"
    stellar = StellarChainSettings(horizon_urls=["http://h1", "http://h2"], network_passphrase="x")
    assert stellar.horizon_url == "http://h1" and stellar.for_endpoint("http://h2").horizon_url == "http://h2"
    assert SolanaChainSettings(rpc_urls=["http://s1", "http://s2"]).rpc_url == "http://s1"
    for bad, message in [
        ({"chain_id": 1}, r"rpc_url \(or rpc_urls\) is required"),
        ({"chain_id": 1, "rpc_url": "http://c", "rpc_urls": ["http://a/KEY123", "http://b"]}, "not two different"),
        ({"chain_id": 1, "rpc_urls": ["not a url"]}, "absolute URL"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            EvmChainSettings(**bad)
        assert "KEY123" not in str(error.value)  # endpoint URLs may carry keys: never echoed


@pytest.mark.parametrize(
    "chain_settings",
    [
        EvmChainSettings(chain_id=1, rpc_urls=["http://a", "http://b"]),
        SolanaChainSettings(rpc_urls=["http://a", "http://b"]),
        StellarChainSettings(horizon_urls=["http://a", "http://b"], network_passphrase="x"),
    ],
    ids=["evm", "solana", "stellar"],
)
def test_failover_chain_has_every_protocol_member_and_the_family_traits(chain_settings: Any) -> None:
    """A protocol member added to chains/base.py must be delegated here too: this fails until it is."""
    chain = build_chain("c", chain_settings)
    assert isinstance(chain, FailoverChain)
    adapter = chain.endpoints[0].adapter
    members = [n for n in dir(Chain) if not n.startswith("_")] + list(typing.get_type_hints(Chain))
    for member in members:
        assert hasattr(chain, member), f"FailoverChain does not delegate {member!r}"
    for trait in (n for n, h in typing.get_type_hints(Chain).items() if typing.get_origin(h) is ClassVar):
        assert getattr(chain, trait) == getattr(adapter, trait), trait
    for method in (n for n in dir(Chain) if not n.startswith("_")):
        assert inspect.iscoroutinefunction(getattr(Chain, method)) == inspect.iscoroutinefunction(getattr(chain, method)), method


def test_one_endpoint_is_the_adapter_itself_and_several_a_failover_chain() -> None:
    settings = Settings(
        chains={
            "one": EvmChainSettings(chain_id=1, rpc_url="http://a:8545"),
            "two": EvmChainSettings(chain_id=1, rpc_urls=["http://a:8545", "http://b:8545"]),
        }
    )
    registry = ChainRegistry.from_settings(settings)
    assert isinstance(registry.get("one"), EvmChain)
    two = registry.get("two")
    assert isinstance(two, FailoverChain)
    assert [e.adapter.settings.rpc_url for e in two.endpoints] == ["http://a:8545", "http://b:8545"]  # type: ignore[attr-defined]
    assert (two.family, two.key_scheme, two.replaceable_in_slot, two.supports_channels) == ("evm", "secp256k1", True, False)
    assert two.normalize_address("0x000000000000000000000000000000000000dead") == "0x000000000000000000000000000000000000dEaD"
    assert two.asset("ETH").decimals == 18 and [a.symbol for a in two.assets()] == ["ETH"]


# ============================================================================ EVM (anvil)


@pytest.fixture
async def anvil_proxies(anvil: local.ManagedProcess) -> AsyncIterator[tuple[FaultProxy, FaultProxy]]:
    proxies = await pair(anvil.info["rpc_url"])
    yield proxies
    await stop(*proxies)


@pytest.fixture
async def web3(anvil: local.ManagedProcess) -> AsyncIterator[AsyncWeb3]:
    web3 = AsyncWeb3(AsyncHTTPProvider(anvil.info["rpc_url"]))
    yield web3
    await web3.provider.disconnect()


def evm_chain(urls: list[str], **failover: Any) -> FailoverChain:
    settings = EvmChainSettings(
        chain_id=31337,
        rpc_urls=urls,
        finality="depth",
        confirmations=1,  # automine, no reorgs: one block is final
        failover=FAST.model_copy(update=failover),
    )
    return built(build_chain(unique("evm"), settings))


def evm_signer(account: Any) -> Callable[[bytes], Any]:
    async def sign(digest: bytes) -> bytes:
        signature = eth_keys.PrivateKey(account.key).sign_msg_hash(digest)
        return signature.r.to_bytes(32, "big") + signature.s.to_bytes(32, "big") + bytes([signature.v])

    return sign


async def funded_evm_account(web3: AsyncWeb3) -> Any:
    account = Account.create()
    await web3.provider.make_request("anvil_setBalance", [account.address, hex(ETH)])  # type: ignore[arg-type]
    return account


async def signed_evm_transfer(chain: Chain, web3: AsyncWeb3, amount: int = 10**15) -> tuple[Any, TransferIntent, SignedTransfer]:
    account = await funded_evm_account(web3)
    intent = TransferIntent(account.address, random_address(), chain.asset("ETH"), amount)
    sequence = await chain.next_sequence(account.address, None)
    return account, intent, await chain.sign_transfer(intent, sequence, evm_signer(account))


async def settle(chain: Chain, intent: TransferIntent, attempts: list[SignedTransfer], state: OnChainState) -> Any:
    """Poll the status until `state` (anvil mines at once; finality may take a block more)."""
    for _ in range(100):
        status = await chain.transfer_status(intent, attempts)
        if status.state == state:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"never reached {state}: {status}")


FAULTS = {
    "dead": None,  # the proxy is stopped: connection refused
    "5xx": {"action": "error", "status": 503},
    "reset": {"action": "reset"},
    "hang": {"action": "hang"},  # beyond request_timeout_seconds
    "429": {"action": "error", "status": 429},
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_evm_reads_go_on_when_the_first_endpoint_fails(fault: str, anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url], request_timeout_seconds=1)
    account = await funded_evm_account(web3)
    if FAULTS[fault] is None:
        await stop(first)
    else:
        first.add(FAULTS[fault])
    native = chain.asset("ETH")
    for _ in range(3):
        assert await chain.balance(account.address, native) == ETH
    assert await chain.next_sequence(account.address, None) == 0
    label = chain.endpoints[0].label
    assert states(chain) == ["open", "closed"]
    assert up(chain.name, label) == 0 and up(chain.name, chain.endpoints[1].label) == 1
    assert failures(chain.name, label) == 2  # the threshold; then the open endpoint is skipped
    if fault != "dead":
        injected = first.injected()
        assert await chain.balance(account.address, native) == ETH
        assert first.injected() == injected  # an open endpoint gets no traffic in its cool-down


async def test_evm_half_open_trial_brings_an_endpoint_back(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url], cooldown_seconds=0.5)
    account = await funded_evm_account(web3)
    first.add(action="error", status=502)
    for _ in range(2):
        assert await chain.balance(account.address, chain.asset("ETH")) == ETH
    assert states(chain) == ["open", "closed"]
    first.clear()
    served = first.snapshot()["forwarded"]
    for _ in range(100):  # after the cool-down, a read is the trial call to the first endpoint
        assert await chain.balance(account.address, chain.asset("ETH")) == ETH
        if states(chain)[0] == "closed":
            break
        await asyncio.sleep(0.05)
    assert states(chain) == ["closed", "closed"] and up(chain.name, chain.endpoints[0].label) == 1
    assert first.snapshot()["forwarded"] > served  # and it serves reads again (it is first)


async def test_evm_every_endpoint_open_is_tried_anyway(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url], failure_threshold=1)
    account = await funded_evm_account(web3)
    first.add(action="reset", name="down")
    second.add(action="reset", name="down")
    with pytest.raises(ChainUnavailable):
        await chain.balance(account.address, chain.asset("ETH"))
    assert states(chain) == ["open", "open"]
    second.remove("down")  # back, but its breaker is open: tried anyway rather than failing
    assert await chain.balance(account.address, chain.asset("ETH")) == ETH
    assert states(chain) == ["open", "closed"]


async def test_evm_all_endpoints_down_is_chain_unavailable_without_urls(
    anvil_proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    first, _ = anvil_proxies
    first.add(action="error", status=503)  # aiohttp puts the whole URL in its message
    chain = evm_chain([f"{first.url}/v2/SECRETKEY0123456789", f"{dead_url()}/?apikey=OTHERSECRET42"])
    with pytest.raises(ChainUnavailable) as error:
        await chain.balance(random_address(), chain.asset("ETH"))
    message = str(error.value)
    assert "SECRETKEY" not in message and "OTHERSECRET" not in message
    assert chain.endpoints[0].label in message and chain.endpoints[1].label in message


async def test_evm_broadcast_reaches_both_nodes_and_lands_once(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url])
    _, intent, signed = await signed_evm_transfer(chain, web3)
    assert await chain.broadcast(signed) == "accepted"
    assert first.seen("eth_sendRawTransaction") == 1 and second.seen("eth_sendRawTransaction") == 1
    status = await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    assert status.tx_hash == signed.tx_hash
    assert await web3.eth.get_balance(intent.destination) == intent.amount
    assert states(chain) == ["closed", "closed"]


@pytest.mark.parametrize("fault", ["dead", "5xx", "reset", "hang"])
async def test_evm_broadcast_survives_one_failing_endpoint(fault: str, anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url])
    _, intent, signed = await signed_evm_transfer(chain, web3)
    if FAULTS[fault] is None:
        await stop(first)
    else:
        first.add(FAULTS[fault], rpc_method="eth_sendRawTransaction")
    assert await chain.broadcast(signed) == "accepted"
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    assert await web3.eth.get_balance(intent.destination) == intent.amount


async def test_evm_lost_answers_then_resend_is_one_transfer(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    """The node took the transaction but neither endpoint's answer arrived: ChainUnavailable,
    the caller sends the same bytes again, and the chain holds one transfer."""
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url])
    account, intent, signed = await signed_evm_transfer(chain, web3)
    # (web3 re-sends eth_sendRawTransaction by itself: the faults stay until removed)
    first.add(action="drop_response", rpc_method="eth_sendRawTransaction", name="lost")
    second.add(action="error", status=503, rpc_method="eth_sendRawTransaction", name="lost")
    with pytest.raises(ChainUnavailable):
        await chain.broadcast(signed)
    first.remove("lost")
    second.remove("lost")
    assert await chain.is_known(signed.tx_hash)
    assert await chain.broadcast(signed) in ("known", "slot_used")  # same bytes: nothing new
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    assert await web3.eth.get_transaction_count(account.address) == 1
    assert await web3.eth.get_balance(intent.destination) == intent.amount


TX_ERRORS = {
    # Bor's tip minimum (Polygon), as Bor words it
    "bor_tip_minimum": ("transaction gas price below minimum: gas tip cap 1000000000, minimum needed 25000000000", FeeTooLow),
    "underpriced": ("replacement transaction underpriced", None),
    "nonce_too_low": ("nonce too low: next nonce 5, tx nonce 4", None),
    "already_known": ("already known", None),
    "nonce_too_high": ("nonce too high", ChainUnavailable),  # a "not now" answer, not a dead node
}


@pytest.mark.parametrize("case", list(TX_ERRORS))
async def test_evm_transaction_errors_never_open_a_breaker(case: str, anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url], failure_threshold=1)
    _, _, signed = await signed_evm_transfer(chain, web3)
    message, raised = TX_ERRORS[case]
    for proxy in (first, second):
        proxy.add(action="respond", rpc_method="eth_sendRawTransaction", rpc_error={"code": -32000, "message": message})
    for _ in range(3):
        if raised is None:
            assert await chain.broadcast(signed) in ("known", "slot_used")
        else:
            with pytest.raises(raised):
                await chain.broadcast(signed)
    assert first.injected("respond") == second.injected("respond") == 3
    assert states(chain) == ["closed", "closed"]
    assert failures(chain.name, chain.endpoints[0].label) == failures(chain.name, chain.endpoints[1].label) == 0


async def test_evm_one_endpoint_refusing_does_not_fail_a_broadcast_the_other_accepts(
    anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3
) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url], failure_threshold=1)
    _, intent, signed = await signed_evm_transfer(chain, web3)
    bor = "transaction gas price below minimum: gas tip cap 1, minimum needed 25000000000"
    first.add(action="respond", rpc_method="eth_sendRawTransaction", rpc_error={"code": -32000, "message": bor})
    assert await chain.broadcast(signed) == "accepted"
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    assert states(chain) == ["closed", "closed"]


async def test_evm_real_nonce_too_low_is_an_answer(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    """anvil's own "nonce too low" for bytes already mined: an answer, never a failure."""
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url], failure_threshold=1)
    _, intent, signed = await signed_evm_transfer(chain, web3)
    assert await chain.broadcast(signed) == "accepted"
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    for _ in range(2):
        assert await chain.broadcast(signed) in ("known", "slot_used")
    assert states(chain) == ["closed", "closed"]


async def external_nonce_use(web3: AsyncWeb3, account: Any, nonce: int) -> None:
    """A transaction of the same key in the same nonce that is none of our attempts."""
    tx = {
        "to": account.address,
        "value": 0,
        "gas": 21_000,
        "maxFeePerGas": 10 * 10**9,
        "maxPriorityFeePerGas": 10**9,
        "nonce": nonce,
        "chainId": 31337,
    }
    raw = Account.sign_transaction(tx, account.key).raw_transaction
    await web3.eth.wait_for_transaction_receipt(await web3.eth.send_raw_transaction(raw))


async def test_evm_slot_lost_needs_two_endpoints(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url], cooldown_seconds=0.2)
    account, intent, signed = await signed_evm_transfer(chain, web3)
    await external_nonce_use(web3, account, signed.sequence)  # type: ignore[arg-type]

    # The second endpoint is down: SLOT_LOST from the first alone is not final.
    second.add(action="error", status=503, name="down")
    status = await chain.transfer_status(intent, [signed])
    assert status.state == OnChainState.PENDING and "needs a second endpoint" in status.detail, status
    second.remove("down")
    for _ in range(100):  # its breaker lets a call through again after the cool-down
        status = await chain.transfer_status(intent, [signed])
        if status.state != OnChainState.PENDING:
            break
        await asyncio.sleep(0.05)
    assert status.state == OnChainState.SLOT_LOST, status  # both agree now

    # The first endpoint is down: the second's verdict needs the first's agreement.
    first.add(action="reset", name="down")
    status = await chain.transfer_status(intent, [signed])
    assert status.state == OnChainState.PENDING, status
    assert REGISTRY.get_sample_value("custody_rpc_verdicts_held_total", {"chain": chain.name, "state": "SLOT_LOST"}) >= 2


async def test_evm_slot_lost_from_one_lying_endpoint_is_not_final(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url])
    _, intent, signed = await signed_evm_transfer(chain, web3)  # signed, never sent: our nonce is free
    first.add(action="respond", rpc_method="eth_getTransactionCount", rpc_result=hex(10**6))
    status = await chain.transfer_status(intent, [signed])
    assert status.state == OnChainState.PENDING
    assert "SLOT_LOST from endpoint 0-" in status.detail and "says PENDING" in status.detail, status
    # The other way round: the honest endpoint first, the liar second: PENDING is simply PENDING.
    liar_second = evm_chain([second.url, first.url])
    assert (await liar_second.transfer_status(intent, [signed])).state == OnChainState.PENDING


async def test_evm_landed_verdict_of_the_second_endpoint_wins(anvil_proxies: tuple[FaultProxy, FaultProxy], web3: AsyncWeb3) -> None:
    """The first endpoint has lost our receipt (pruned, or behind) and sees the nonce used: the
    second sees our transaction final. The transfer happened: CONFIRMED."""
    first, second = anvil_proxies
    chain = evm_chain([first.url, second.url])
    _, intent, signed = await signed_evm_transfer(chain, web3)
    assert await chain.broadcast(signed) == "accepted"
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    first.add(action="respond", rpc_method="eth_getTransactionReceipt", rpc_result=None)
    status = await chain.transfer_status(intent, [signed])
    assert status.state == OnChainState.CONFIRMED and status.tx_hash == signed.tx_hash


# ----------------------------------------------------------------------------- end to end (API)


# Overrides conftest's stellar_devnet (the Solana one is conftest's): the devnet's default 30 s
# submission timeout, and no USDX issuer funded.
@pytest.fixture(scope="module")
async def stellar_devnet() -> AsyncIterator[StellarDevnet]:
    async with run_stellar_devnet(port=0, close_interval_ms=100) as d:
        yield d


@pytest.fixture
async def failing_first(solana_devnet: SolanaDevnet, stellar_devnet: StellarDevnet) -> AsyncIterator[dict[str, FaultProxy]]:
    """First endpoints for the end-to-end runs: Solana's answers 503, Stellar's resets."""
    solana, stellar = FaultProxy(solana_devnet.url), FaultProxy(stellar_devnet.url)
    for proxy in (solana, stellar):
        await asyncio.to_thread(proxy.start)
    solana.add(action="error", status=503)
    stellar.add(action="reset")
    yield {"solana": solana, "stellar": stellar}
    await stop(solana, stellar)


@pytest.fixture
def settings(
    base_settings: Settings,
    task_queue: str,
    failing_first: dict[str, FaultProxy],
    solana_devnet: SolanaDevnet,
    stellar_devnet: StellarDevnet,
) -> Settings:
    """conftest's `worker` and `api` build on this: every chain's first endpoint fails (anvil's
    is dead), the second is the real node."""
    anvil = base_settings.chains["anvil"]
    failover = FailoverSettings(failure_threshold=2, cooldown_seconds=600)
    evm_urls = [dead_url(), anvil.rpc_url]
    solana_urls = [failing_first["solana"].url, solana_devnet.url]
    stellar_urls = [failing_first["stellar"].url, stellar_devnet.url]
    chains = {
        "anvil": anvil.model_copy(update={"rpc_url": evm_urls[0], "rpc_urls": evm_urls, "failover": failover}),
        "solana": SolanaChainSettings(
            rpc_urls=solana_urls, faucet_enabled=True, poll_interval_seconds=0.2, fee_bump_after_seconds=1, failover=failover
        ),
        "stellar": StellarChainSettings(
            horizon_urls=stellar_urls,
            network_passphrase=stellar_devnet.network_passphrase,
            friendbot_url=stellar_devnet.friendbot_url,
            faucet_enabled=True,
            poll_interval_seconds=0.2,
            fee_bump_after_seconds=2,
            failover=failover,
        ),
    }
    return base_settings.model_copy(update={"task_queue": task_queue, "chains": chains})


async def test_evm_withdrawal_through_the_api_with_the_first_endpoint_dead(api: httpx.AsyncClient, web3: AsyncWeb3, settings: Settings) -> None:
    assert settings.chains["anvil"].endpoint_urls()[1] != settings.chains["anvil"].rpc_url
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    to = random_address()
    response = await withdraw(api, wallet, to, "0.25")
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert await web3.eth.get_balance(to) == ETH // 4  # exactly once
    assert len(done["attempts"]) == 1 and done["tx_hash"] == done["attempts"][0]["tx_hash"]


async def chain_wallet(api: httpx.AsyncClient, chain: str, fund_amount: str) -> dict:
    response = await api.post("/v1/wallets", json={"chain": chain, "label": unique(chain)}, headers=ALICE)
    assert response.status_code == 201, response.text
    wallet = response.json()
    body = {} if chain == "stellar" else {"amount": fund_amount}  # friendbot funds its own fixed amount
    funded = await api.post(f"/v1/wallets/{wallet['id']}/fund", json=body, headers=ALICE)
    assert funded.status_code == 200, funded.text
    return wallet


@pytest.mark.parametrize("chain", ["solana", "stellar"])
async def test_withdrawal_through_the_api_with_the_first_endpoint_failing(
    chain: str,
    api: httpx.AsyncClient,
    failing_first: dict[str, FaultProxy],
    solana_devnet: SolanaDevnet,
    stellar_devnet: StellarDevnet,
) -> None:
    wallet = await chain_wallet(api, chain, "2")
    if chain == "solana":
        to, asset, amount, base_units = str(SolanaKeypair().pubkey()), "SOL", "0.25", SOL // 4
    else:
        to, asset, amount, base_units = StellarKeypair.random().public_key, "XLM", "3", 3 * XLM
    response = await api.post(
        "/v1/withdrawals",
        json={"wallet_id": wallet["id"], "to": to, "asset": asset, "amount": amount},
        headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert response.status_code == 202, response.text
    done = await wait_for_status(api, response.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED", done
    assert len(done["attempts"]) == 1
    if chain == "solana":
        async with AsyncClient(solana_devnet.url) as direct:
            assert (await direct.get_balance(Pubkey.from_string(to))).value == base_units  # exactly once
    else:
        async with httpx.AsyncClient(base_url=stellar_devnet.url) as http:
            account = (await http.get(f"/accounts/{to}")).json()
        native = next(b for b in account["balances"] if b["asset_type"] == "native")
        assert Decimal(native["balance"]) * XLM == base_units  # created with exactly the amount, once
    assert failing_first[chain].injected() >= 2  # the first endpoint really was failing


# ============================================================================ Solana devnet


@pytest.fixture
async def solana_proxies(solana_devnet: SolanaDevnet) -> AsyncIterator[tuple[FaultProxy, FaultProxy]]:
    proxies = await pair(solana_devnet.url)
    yield proxies
    await stop(*proxies)


async def solana_chain(urls: list[str], **failover: Any) -> FailoverChain:
    settings = SolanaChainSettings(rpc_urls=urls, commitment="confirmed", faucet_enabled=True, failover=FAST.model_copy(update=failover))
    return built(build_chain(unique("solana"), settings))


def solana_signer(kp: SolanaKeypair) -> Callable[[bytes], Any]:
    async def sign(message: bytes) -> bytes:
        return bytes(kp.sign_message(message))

    return sign


async def solana_transfer(chain: Chain, lamports: int = SOL) -> tuple[SolanaKeypair, TransferIntent, SignedTransfer]:
    sender = SolanaKeypair()
    await chain.faucet(str(sender.pubkey()), chain.asset("SOL"), 5 * SOL)
    intent = TransferIntent(str(sender.pubkey()), str(SolanaKeypair().pubkey()), chain.asset("SOL"), lamports)
    return sender, intent, await chain.sign_transfer(intent, None, solana_signer(sender))


@pytest.mark.parametrize("fault", ["dead", "5xx", "reset"])
async def test_solana_reads_and_broadcast_with_one_endpoint_failing(
    fault: str, solana_proxies: tuple[FaultProxy, FaultProxy], solana_devnet: SolanaDevnet
) -> None:
    first, second = solana_proxies
    chain = await solana_chain([first.url, second.url])
    if FAULTS[fault] is None:
        await stop(first)
    else:
        first.add(FAULTS[fault])
    _, intent, signed = await solana_transfer(chain)
    assert await chain.broadcast(signed) == "accepted"
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    async with AsyncClient(solana_devnet.url) as direct:
        assert (await direct.get_balance(Pubkey.from_string(intent.destination))).value == SOL
    assert states(chain) == ["open", "closed"]


async def test_solana_broadcast_reaches_both_and_preflight_errors_are_answers(
    solana_proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    first, second = solana_proxies
    chain = await solana_chain([first.url, second.url], failure_threshold=1)
    sender, intent, signed = await solana_transfer(chain)
    assert await chain.broadcast(signed) == "accepted"
    assert first.seen("sendTransaction") == 1 and second.seen("sendTransaction") == 1
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    assert await chain.broadcast(signed) == "known"  # already processed: an answer
    too_much = TransferIntent(intent.sender, intent.destination, intent.asset, 100 * SOL)
    refused = await chain.sign_transfer(too_much, None, solana_signer(sender))
    for _ in range(2):
        with pytest.raises(InsufficientFunds):  # the nodes' preflight (simulation) refuses it
            await chain.broadcast(refused)
    assert states(chain) == ["closed", "closed"]


async def test_solana_expired_needs_two_endpoints(solana_proxies: tuple[FaultProxy, FaultProxy], solana_devnet: SolanaDevnet) -> None:
    first, second = solana_proxies
    chain = await solana_chain([first.url, second.url])
    _, intent, fresh = await solana_transfer(chain)
    # A lying first endpoint (finalized height far ahead) calls a live attempt EXPIRED; the
    # second one disagrees: not final.
    first.add(action="respond", rpc_method="getBlockHeight", rpc_result=10**12, name="liar")
    status = await chain.transfer_status(intent, [fresh])
    assert status.state == OnChainState.PENDING and "EXPIRED from endpoint 0-" in status.detail, status
    first.remove("liar")

    await solana_devnet.expire_blockhashes()  # never sent, now provably dead on the chain itself
    second.add(action="error", status=503, name="down")
    status = await chain.transfer_status(intent, [fresh])
    assert status.state == OnChainState.PENDING and "needs a second endpoint" in status.detail, status
    second.remove("down")
    other = await solana_chain([first.url, second.url])  # a fresh chain: no open breaker
    assert (await other.transfer_status(intent, [fresh])).state == OnChainState.EXPIRED


# ============================================================================ Stellar devnet


@pytest.fixture
async def stellar_proxies(stellar_devnet: StellarDevnet) -> AsyncIterator[tuple[FaultProxy, FaultProxy]]:
    proxies = await pair(stellar_devnet.url)
    yield proxies
    await stop(*proxies)


def stellar_chain(devnet: StellarDevnet, urls: list[str], **failover: Any) -> FailoverChain:
    settings = StellarChainSettings(
        horizon_urls=urls,
        network_passphrase=devnet.network_passphrase,
        friendbot_url=devnet.friendbot_url,  # the faucet itself is not under test here
        faucet_enabled=True,
        failover=FAST.model_copy(update=failover),
    )
    return built(build_chain(unique("stellar"), settings))


def stellar_signer(kp: StellarKeypair) -> Callable[[bytes], Any]:
    async def sign(message: bytes) -> bytes:
        return kp.sign(message)

    return sign


async def stellar_transfer(chain: Chain, amount: int = 5 * XLM) -> tuple[StellarKeypair, TransferIntent, SignedTransfer]:
    sender, receiver = StellarKeypair.random(), StellarKeypair.random()
    for kp in (sender, receiver):
        await chain.faucet(kp.public_key, chain.asset("XLM"), None)
    intent = TransferIntent(sender.public_key, receiver.public_key, chain.asset("XLM"), amount)
    sequence = await chain.next_sequence(sender.public_key, None)
    return sender, intent, await chain.sign_transfer(intent, sequence, stellar_signer(sender))


@pytest.mark.parametrize("fault", ["dead", "5xx", "reset"])
async def test_stellar_reads_and_broadcast_with_one_endpoint_failing(
    fault: str, stellar_proxies: tuple[FaultProxy, FaultProxy], stellar_devnet: StellarDevnet
) -> None:
    first, second = stellar_proxies
    chain = stellar_chain(stellar_devnet, [first.url, second.url])
    if FAULTS[fault] is None:
        await stop(first)
    else:
        first.add(FAULTS[fault])
    _, intent, signed = await stellar_transfer(chain)
    before = await chain.balance(intent.destination, chain.asset("XLM"))
    assert await chain.broadcast(signed) == "accepted"
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    assert await chain.balance(intent.destination, chain.asset("XLM")) == before + intent.amount
    assert states(chain) == ["open", "closed"]


async def test_stellar_broadcast_reaches_both_and_bad_seq_is_an_answer(
    stellar_proxies: tuple[FaultProxy, FaultProxy], stellar_devnet: StellarDevnet
) -> None:
    first, second = stellar_proxies
    chain = stellar_chain(stellar_devnet, [first.url, second.url], failure_threshold=1)
    sender, intent, signed = await stellar_transfer(chain)
    assert await chain.broadcast(signed) in ("accepted",)
    assert first.seen("POST /transactions") == 1 and second.seen("POST /transactions") == 1
    await settle(chain, intent, [signed], OnChainState.CONFIRMED)
    other = TransferIntent(intent.sender, intent.destination, intent.asset, intent.amount + 1)
    stale = await chain.sign_transfer(other, signed.sequence, stellar_signer(sender))  # a used sequence
    for _ in range(2):
        assert await chain.broadcast(stale) == "slot_used"  # Horizon's tx_bad_seq, from both
    assert states(chain) == ["closed", "closed"]


async def test_stellar_expired_needs_two_endpoints(stellar_proxies: tuple[FaultProxy, FaultProxy], stellar_devnet: StellarDevnet) -> None:
    first, second = stellar_proxies
    chain = stellar_chain(stellar_devnet, [first.url, second.url])
    _, intent, signed = await stellar_transfer(chain)  # never sent
    async with httpx.AsyncClient(base_url=stellar_devnet.url) as http:
        await http.post("/_devnet/advance_time", json={"seconds": chain.settings.timebounds_seconds + 60})  # type: ignore[attr-defined]
        await http.post("/_devnet/close_ledgers", json={"count": 1})
    second.add(action="reset", name="down")
    status = await chain.transfer_status(intent, [signed])
    assert status.state == OnChainState.PENDING and "needs a second endpoint" in status.detail, status
    second.remove("down")
    other = stellar_chain(stellar_devnet, [first.url, second.url])
    status = await other.transfer_status(intent, [signed])
    assert status.state == OnChainState.EXPIRED, status
