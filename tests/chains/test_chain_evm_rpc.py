"""EvmChain's JSON-RPC traffic as a node sees it (devnet/faultproxy.py in front of a real anvil,
counting at the wire): calls share kept-alive connections, and the chain id is asked once."""

from __future__ import annotations

import asyncio

from web3 import AsyncHTTPProvider, AsyncWeb3

from chains.base import TransferIntent
from chains.evm import EvmChain
from core.settings import EvmChainSettings
from devnet import local
from devnet.faultproxy import FaultProxy
from tests.conftest import random_address


async def test_evm_calls_share_kept_alive_connections_and_ask_the_chain_id_once(anvil: local.ManagedProcess) -> None:
    node = AsyncWeb3(AsyncHTTPProvider(anvil.info["rpc_url"]))
    sender = (await node.eth.accounts)[0]  # anvil's funded dev account: gas estimates pass
    await node.provider.disconnect()
    async with FaultProxy(anvil.info["rpc_url"]) as proxy:
        chain = EvmChain("anvil", EvmChainSettings(chain_id=31337, rpc_url=proxy.url))
        try:
            eth = chain.asset("ETH")
            # The first calls arrive together (a worker starting with activities waiting): each
            # waits for the kept-alive session rather than racing web3 into caching its own.
            assert all(b > 0 for b in await asyncio.gather(*(chain.balance(sender, eth) for _ in range(8))))
            together = proxy.snapshot()["connections"]
            intent = TransferIntent(sender, random_address(), eth, 10**15)
            for _ in range(5):
                # fee_history + eth_estimateGas (which web3 validates against the node's chain id),
                # the balance, the pending nonce: what validating and signing a withdrawal reads.
                assert await chain.estimate_max_fee(intent) > 0
                assert await chain.balance(sender, eth) > 0
                assert await chain.next_sequence(sender, None) >= 0
            seen = proxy.snapshot()
        finally:
            await chain.web3.provider.disconnect()
    assert seen["seen"]["eth_estimateGas"] == 5 and seen["requests"] >= 28, seen
    # web3's own session opens a TCP connection per call (force_close): 28 and more here. Kept
    # alive: at most one per call in flight at once (8), reused by the 20 calls after them.
    assert together <= 8 and seen["connections"] == together, seen
    assert seen["seen"].get("eth_chainId", 0) <= 1, seen
