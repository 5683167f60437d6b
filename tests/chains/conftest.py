"""One live adapter per chain family for the conformance suite (tests/chains/test_conformance.py).

`adapter` is parametrized over EVM (the session's anvil), Solana (a LiteSVM devnet whose slots
move only when told) and Stellar (the Horizon-compatible devnet), each once on its adapter and
once behind a FailoverChain of two endpoints (the same node twice). Each `Harness` hides how its
family makes a funded account, a key's signer and a provably dead attempt, so the suite itself
only speaks the `Chain` protocol (chains/base.py). A new chain proves itself by adding a harness.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from chains.base import Chain, DigestSigner
from chains.registry import build_chain
from core.settings import AssetSpec, ChainSettingsBase

SignFn = Callable[[bytes], Awaitable[bytes]]


@dataclass
class Account:
    address: str
    sign: DigestSigner


class RecordingSigner:
    """A plain key that also keeps what `approve_before_signing` showed it: the exact unsigned
    bytes and the message, so a test can hand them to `describe_unsigned`."""

    def __init__(self, sign: SignFn) -> None:
        self._sign = sign
        self.shown: list[tuple[bytes, bytes]] = []

    async def check(self, message: bytes, unsigned: bytes) -> None:
        self.shown.append((message, unsigned))

    async def __call__(self, message: bytes) -> bytes:
        return await self._sign(message)


@dataclass
class Harness:
    """What the suite needs from a family besides the adapter: accounts, an amount a funded
    account can send to another, and a way to make an unsent attempt provably unable to land."""

    family: str
    chain: Chain
    amount: int
    new_account: Callable[[], Awaitable[Account]]
    new_key: Callable[[], Account]  # a valid key and address with nothing on chain
    outlive: Callable[[], Awaitable[None]]  # every attempt signed so far can no longer land
    native: AssetSpec = field(init=False)

    def __post_init__(self) -> None:
        self.native = self.chain.asset(self.chain.settings.native_symbol)


def _over_endpoints(name: str, settings: ChainSettingsBase, endpoints: int) -> Chain:
    """The adapter itself (one endpoint), or the FailoverChain that production builds for several
    endpoints (chains/failover.py), here each endpoint the same node: it must honour the same
    protocol."""
    if endpoints == 1:
        return build_chain(name, settings)
    from chains.failover import FailoverChain

    field_name = "horizon_urls" if settings.family == "stellar" else "rpc_urls"
    chain = build_chain(name, settings.model_copy(update={field_name: settings.endpoint_urls() * endpoints}))
    assert isinstance(chain, FailoverChain), chain
    return chain


async def _close(chain: Chain) -> None:
    close = getattr(chain, "close", None)
    if close is not None:
        await close()


Harnesses = Callable[[int], Harness]  # a family's harness over this many endpoints


# ----------------------------------------------------------------------------- EVM (anvil)


def _evm_key() -> Account:
    from eth_account import Account as EthAccount

    key = EthAccount.create()

    async def sign(digest: bytes) -> bytes:
        signed = EthAccount._sign_hash(digest, key.key)  # type: ignore[attr-defined]
        return signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v - 27])

    return Account(key.address, sign)


@pytest.fixture(scope="module")
async def evm_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harnesses]:
    from core.settings import EvmChainSettings

    anvil = request.getfixturevalue("anvil")  # the session's anvil: one block per transaction
    settings = EvmChainSettings(chain_id=31337, rpc_url=anvil.info["rpc_url"], faucet_enabled=True, finality="depth", confirmations=1)
    made: list[Chain] = []

    def harness(endpoints: int) -> Harness:
        chain = _over_endpoints("anvil", settings, endpoints)
        made.append(chain)

        async def new_account() -> Account:
            account = _evm_key()
            await chain.faucet(account.address, chain.asset("ETH"), 10**18)
            return account

        async def outlive() -> None:  # EVM replaces inside the slot instead (replaceable_in_slot)
            raise AssertionError("an EVM attempt is replaced, not expired")

        return Harness("evm", chain, 10**15, new_account, _evm_key, outlive)

    yield harness
    for chain in made:
        await _close(chain)


# ----------------------------------------------------------------------------- Solana (LiteSVM)


def _solana_key() -> Account:
    from solders.keypair import Keypair

    kp = Keypair()

    async def sign(message: bytes) -> bytes:
        return bytes(kp.sign_message(message))

    return Account(str(kp.pubkey()), sign)


@pytest.fixture(scope="module")
async def solana_harness() -> AsyncIterator[Harnesses]:
    from core.settings import SolanaChainSettings
    from devnet.solana import run_solana_devnet

    async with run_solana_devnet(host="127.0.0.1", port=0, slot_ms=0) as devnet:
        settings = SolanaChainSettings(
            rpc_url=devnet.url,
            compute_unit_price_micro_lamports=5_000,
            compute_unit_limit=200_000,
            faucet_enabled=True,
            commitment="confirmed",  # slots move only when told: confirmed lands at once
        )
        made: list[Chain] = []

        def harness(endpoints: int) -> Harness:
            chain = _over_endpoints("solana", settings, endpoints)
            made.append(chain)

            async def new_account() -> Account:
                account = _solana_key()
                await chain.faucet(account.address, chain.asset("SOL"), 10 * 10**9)
                return account

            return Harness("solana", chain, 10**7, new_account, _solana_key, devnet.expire_blockhashes)  # type: ignore[arg-type]

        try:
            yield harness
        finally:
            for chain in made:
                await _close(chain)


# ----------------------------------------------------------------------------- Stellar


def _stellar_key() -> Account:
    from stellar_sdk import Keypair

    kp = Keypair.random()

    async def sign(message: bytes) -> bytes:
        return kp.sign(message)

    return Account(kp.public_key, sign)


@pytest.fixture(scope="module")
async def stellar_harness() -> AsyncIterator[Harness]:
    import httpx

    from core.settings import StellarChainSettings
    from devnet.stellar import run_stellar_devnet

    async with run_stellar_devnet(port=0, close_interval_ms=100) as devnet:
        settings = StellarChainSettings(
            horizon_url=devnet.url,
            network_passphrase=devnet.network_passphrase,
            friendbot_url=devnet.friendbot_url,
            faucet_enabled=True,
        )
        made: list[Chain] = []
        async with httpx.AsyncClient(base_url=devnet.url, timeout=30) as http:

            async def outlive() -> None:  # the network's clock passes every attempt's max_time
                await http.post("/_devnet/advance_time", json={"seconds": settings.timebounds_seconds + 60})
                await http.post("/_devnet/close_ledgers", json={"count": 1})

            def harness(endpoints: int) -> Harness:
                chain = _over_endpoints("stellar", settings, endpoints)
                made.append(chain)

                async def new_account() -> Account:
                    account = _stellar_key()
                    await chain.faucet(account.address, chain.asset("XLM"), None)  # friendbot: its own 10000 XLM
                    return account

                return Harness("stellar", chain, 2 * 10**7, new_account, _stellar_key, outlive)

            try:
                yield harness
            finally:
                for chain in made:
                    await _close(chain)


KEYS: dict[str, Callable[[], Account]] = {"evm": _evm_key, "solana": _solana_key, "stellar": _stellar_key}


@pytest.fixture(scope="module", params=[f"{family}{variant}" for family in sorted(KEYS) for variant in ("", "-2-endpoints")])
def adapter(request: pytest.FixtureRequest) -> Harness:
    """The chain under test: every conformance test runs once per family on its own adapter, and
    once on the FailoverChain over two endpoints of the same node."""
    family, _, variant = request.param.partition("-")
    return request.getfixturevalue(f"{family}_harness")(2 if variant else 1)
