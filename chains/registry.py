"""Turn settings into chain adapters, once per process."""

from __future__ import annotations

from chains.base import Chain
from core.errors import UnknownChain
from core.redaction import register_urls
from core.settings import ChainSettingsBase, EvmChainSettings, Settings, SolanaChainSettings, StellarChainSettings


def build_adapter(name: str, chain_settings: ChainSettingsBase) -> Chain:
    """The family's adapter for settings with one endpoint."""
    if isinstance(chain_settings, EvmChainSettings):
        from chains.evm import EvmChain

        return EvmChain(name, chain_settings)
    if isinstance(chain_settings, StellarChainSettings):
        from chains.stellar import StellarChain

        return StellarChain(name, chain_settings)
    if isinstance(chain_settings, SolanaChainSettings):
        from chains.solana import SolanaChain

        return SolanaChain(name, chain_settings)
    raise TypeError(f"no adapter for {type(chain_settings).__name__}")


def build_chain(name: str, chain_settings: ChainSettingsBase) -> Chain:
    """One endpoint: the adapter itself. Several (rpc_urls / horizon_urls): a FailoverChain over
    one adapter per endpoint."""
    urls = chain_settings.endpoint_urls()
    register_urls(urls)  # their keys are masked in every error and log line from now on
    if len(urls) == 1:
        return build_adapter(name, chain_settings)
    from chains.failover import FailoverChain

    adapters = [build_adapter(name, chain_settings.for_endpoint(url)) for url in urls]
    # FailoverChain copies its adapters' ClassVar traits (family, key_scheme...) with setattr at
    # runtime, so mypy cannot see it meets the protocol's ClassVars.
    return FailoverChain(name, chain_settings, adapters, urls)  # type: ignore[return-value]


class ChainRegistry:
    def __init__(self, chains: dict[str, Chain]) -> None:
        self._chains = chains

    @classmethod
    def from_settings(cls, settings: Settings) -> ChainRegistry:
        return cls({name: build_chain(name, chain_settings) for name, chain_settings in settings.chains.items()})

    def get(self, name: str) -> Chain:
        chain = self._chains.get(name.lower())
        if chain is None:
            raise UnknownChain(f"chain {name!r} is not configured", chain=name)
        return chain

    def names(self) -> list[str]:
        return sorted(self._chains)
