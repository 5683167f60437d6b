"""Envelope encryption for small secrets custody must read back (webhook signing secrets), with the
local keystore's machinery: AES-256-GCM under a fresh data key per secret, the data key wrapped
by the key-encryption key of `CUSTODY_KEYSTORE_KEK` (signers/kek.py: in-memory AES-256-GCM, or
AWS KMS / Cloud KMS Encrypt/Decrypt, so that with a KMS KEK nothing that opens the secret is ever
in a file or in the database). A context string (e.g. the endpoint id) is bound into both seals
as associated data, so a sealed secret copied onto another row does not open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import SigningFailed
from signers.kek import DEK_BYTES, KeyEncryptionKey

NONCE_BYTES = 12


@dataclass(frozen=True)
class SealedSecret:
    ciphertext: bytes
    nonce: bytes
    wrapped_key: bytes  # the data key, as the KEK wrapped it (nonce included for the local KEK)
    kek_id: str


class SecretBox:
    def __init__(self, kek: KeyEncryptionKey) -> None:
        self._kek = kek

    @property
    def kek_id(self) -> str:
        return self._kek.kek_id

    async def seal(self, secret: bytes, context: str) -> SealedSecret:
        """Raises SignerUnavailable (a KMS KEK throttled or down: retry) or SigningFailed."""
        aad = context.encode()
        dek = AESGCM.generate_key(bit_length=DEK_BYTES * 8)
        try:
            nonce = os.urandom(NONCE_BYTES)
            ciphertext = AESGCM(dek).encrypt(nonce, secret, aad)
            wrapped = await self._kek.wrap(dek, aad)
        finally:
            del dek
        return SealedSecret(ciphertext=ciphertext, nonce=nonce, wrapped_key=wrapped, kek_id=self._kek.kek_id)

    async def open(self, sealed: SealedSecret, context: str) -> bytes:
        """The secret; SigningFailed if it was sealed under another KEK or context, or altered."""
        aad = context.encode()
        if sealed.kek_id != self._kek.kek_id:
            raise SigningFailed("secret was sealed under another key-encryption key", kek_id=sealed.kek_id)
        dek = await self._kek.unwrap(bytes(sealed.wrapped_key), aad)
        try:
            return AESGCM(dek).decrypt(bytes(sealed.nonce), bytes(sealed.ciphertext), aad)
        except Exception as e:  # InvalidTag: altered row or wrong context
            raise SigningFailed("sealed secret does not open under the configured key-encryption key") from e
        finally:
            del dek
