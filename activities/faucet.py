"""Test-network funding (anvil dev account). Refused on chains without a faucet."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity

from chains.registry import ChainRegistry
from core.errors import NotAvailable


@dataclass
class FaucetInput:
    chain: str
    address: str
    asset: str
    amount: int


class FaucetActivities:
    def __init__(self, chains: ChainRegistry) -> None:
        self._chains = chains

    @activity.defn(name="faucet_transfer")
    async def transfer(self, request: FaucetInput) -> str:
        chain = self._chains.get(request.chain)
        if not chain.settings.faucet_enabled:
            raise NotAvailable("this chain has no faucet", chain=request.chain)
        return await chain.faucet(request.address, chain.asset(request.asset), request.amount)
