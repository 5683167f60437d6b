"""Test-network funding: anvil's dev account, Solana airdrops and test-token mints, Stellar's
friendbot and test-asset issuer. Refused on chains without a faucet."""

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
    amount: int | None  # None: the faucet's own fixed amount (Stellar's friendbot)


@dataclass
class FaucetResult:
    tx_hash: str
    amount: int  # base units actually funded


class FaucetActivities:
    def __init__(self, chains: ChainRegistry) -> None:
        self._chains = chains

    async def _fund(self, request: FaucetInput) -> FaucetResult:
        chain = self._chains.get(request.chain)
        if not chain.settings.faucet_enabled:
            raise NotAvailable("this chain has no faucet", chain=request.chain)
        funding = await chain.faucet(request.address, chain.asset(request.asset), request.amount)
        return FaucetResult(tx_hash=funding.tx_hash, amount=funding.amount)

    @activity.defn(name="faucet_fund")
    async def fund(self, request: FaucetInput) -> FaucetResult:
        """What was paid: the transaction and the amount (friendbot's, where it decides)."""
        return await self._fund(request)

    @activity.defn(name="faucet_transfer")
    async def transfer(self, request: FaucetInput) -> str:
        """FaucetWorkflow runs started before faucet_fund existed: the transaction id only."""
        return (await self._fund(request)).tx_hash
