"""Turn settings into chain adapters, once per process."""

from __future__ import annotations

from chains.base import Chain
from core.errors import UnknownChain
from core.settings import EvmChainSettings, Settings, SolanaChainSettings, StellarChainSettings


class ChainRegistry:
    def __init__(self, chains: dict[str, Chain]) -> None:
        self._chains = chains

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainRegistry:
        chains: dict[str, Chain] = {}
        for name, chain_settings in settings.chains.items():
            if isinstance(chain_settings, EvmChainSettings):
                from chains.evm import EvmChain

                chains[name] = EvmChain(name, chain_settings)
            elif isinstance(chain_settings, StellarChainSettings):
                from chains.stellar import StellarChain

                chains[name] = StellarChain(name, chain_settings)
            elif isinstance(chain_settings, SolanaChainSettings):
                from chains.solana import SolanaChain

                chains[name] = SolanaChain(name, chain_settings)
        return cls(chains)

    def get(self, name: str) -> Chain:
        chain = self._chains.get(name.lower())
        if chain is None:
            raise UnknownChain(f"chain {name!r} is not configured", chain=name)
        return chain

    def names(self) -> list[str]:
        return sorted(self._chains)
