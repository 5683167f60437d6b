"""Wallet creation activities: a key in the signer backend, then the wallet row activated."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity

from chains.registry import ChainRegistry
from core import metrics
from core.errors import WalletNotFound
from db import audit
from db.engine import SessionFactory
from models.db import Wallet, utcnow
from models.payloads import CreatedKey, WalletCreationResult
from signers.registry import SignerSet


@dataclass
class ActivateWalletInput:
    wallet_id: str
    key: CreatedKey


@dataclass
class WalletFailedInput:
    wallet_id: str
    error_code: str


class WalletActivities:
    """Keys are made in the backend recorded on the wallet row (set when the row is created:
    the default backend, or e.g. a pool's HODL backend), never in whatever is default today."""

    def __init__(self, sessions: SessionFactory, chains: ChainRegistry, signers: SignerSet) -> None:
        self._sessions = sessions
        self._chains = chains
        self._signers = signers

    async def _wallet(self, wallet_id: str) -> Wallet:
        async with self._sessions() as session:
            wallet = await session.get(Wallet, wallet_id)
        if wallet is None:
            raise WalletNotFound("no such wallet", wallet_id=wallet_id)
        return wallet

    @activity.defn(name="create_wallet_key")
    async def create_key(self, wallet_id: str) -> CreatedKey:
        """Idempotent: the key id derives from the wallet id, so a retry finds the same key."""
        wallet = await self._wallet(wallet_id)
        scheme = self._chains.get(wallet.chain).key_scheme
        key = await self._signers.get(wallet.signer_backend).create_key(f"wallet-{wallet_id}", scheme)
        return CreatedKey(key_ref=key.key_ref, public_key_hex=key.public_key.hex())

    @activity.defn(name="activate_wallet")
    async def activate(self, request: ActivateWalletInput) -> WalletCreationResult:
        async with self._sessions() as session, session.begin():
            wallet = await session.get(Wallet, request.wallet_id, with_for_update=True)
            if wallet is None:
                raise WalletNotFound("no such wallet", wallet_id=request.wallet_id)
            if wallet.status == "CREATING":
                chain = self._chains.get(wallet.chain)
                wallet.address = chain.address_from_public_key(bytes.fromhex(request.key.public_key_hex))
                wallet.key_ref = request.key.key_ref
                wallet.public_key = request.key.public_key_hex
                wallet.status = "ACTIVE"
                wallet.updated_at = utcnow()
                session.add(wallet)
                # In the activation's transaction: a wallet is ACTIVE exactly when its creation is
                # in the audit log (API wallets, invisible user wallets, pool keys, channels alike).
                await audit.append(
                    session,
                    actor="system:workflow",
                    action="wallet.created",
                    object_type="wallet",
                    object_id=wallet.id,
                    details={"owner": wallet.owner, "chain": wallet.chain, "address": wallet.address, "backend": wallet.signer_backend},
                )
                metrics.WALLETS_CREATED.labels(chain=wallet.chain, backend=wallet.signer_backend).inc()
            return WalletCreationResult(wallet_id=wallet.id, status=wallet.status, address=wallet.address)

    @activity.defn(name="mark_wallet_failed")
    async def mark_failed(self, request: WalletFailedInput) -> None:
        async with self._sessions() as session, session.begin():
            wallet = await session.get(Wallet, request.wallet_id, with_for_update=True)
            if wallet is not None and wallet.status == "CREATING":
                wallet.status = "FAILED"
                wallet.error_code = request.error_code
                wallet.updated_at = utcnow()
                session.add(wallet)
