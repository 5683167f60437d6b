"""Key backends: create keys, sign inside the backend, never hand out key material."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

KeyScheme = Literal["secp256k1", "ed25519"]


@dataclass(frozen=True)
class KeyInfo:
    key_ref: str  # backend-specific reference (keystore id, KMS key name / ARN)
    public_key: bytes  # secp256k1: 65-byte uncompressed; ed25519: 32 bytes


class Signer(Protocol):
    backend: ClassVar[str]

    async def create_key(self, key_id: str, scheme: KeyScheme) -> KeyInfo:
        """Idempotent per key_id: a retry returns the key made the first time.
        Raises SignerUnavailable (retry) or SigningFailed."""
        ...

    async def sign(self, key_ref: str, scheme: KeyScheme, message: bytes) -> bytes:
        """secp256k1: sign a 32-byte digest, return r||s||recovery_id with low s.
        ed25519: sign raw bytes, return the 64-byte signature. The signature is verified
        against the key's public key before it is returned. Raises SigningFailed, SignerUnavailable."""
        ...
