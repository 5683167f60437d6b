"""Local keystore for development: private keys envelope-encrypted in PostgreSQL.

Each key is sealed with AES-256-GCM under its own random data key (DEK); the DEK is sealed
with the key-encryption key (KEK) from settings. The key id is bound into both seals as
associated data, so a ciphertext copied onto another row does not decrypt. Plaintext keys
exist only inside `sign`, for the duration of one signature.
"""

from __future__ import annotations

import os
from typing import ClassVar

import coincurve
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.dialects.postgresql import insert

from core.errors import SigningFailed
from db.engine import SessionFactory
from models.db import KeystoreKey
from signers.base import KeyInfo, KeyScheme


def _generate(scheme: KeyScheme) -> tuple[bytes, bytes]:
    if scheme == "secp256k1":
        key = coincurve.PrivateKey()
        return key.secret, key.public_key.format(compressed=False)
    if scheme == "ed25519":
        key = Ed25519PrivateKey.generate()
        secret = key.private_bytes_raw()
        return secret, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raise SigningFailed(f"unsupported key scheme {scheme!r}")


def verify_signature(scheme: KeyScheme, public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise SigningFailed unless `signature` is valid for `message` under `public_key`."""
    try:
        if scheme == "secp256k1":
            recovered = coincurve.PublicKey.from_signature_and_message(signature, message, hasher=None)
            s = int.from_bytes(signature[32:64], "big")
            if recovered.format(compressed=False) != public_key or s > SECP256K1_N // 2:
                raise SigningFailed("secp256k1 signature does not match the key (or has high s)")
        else:
            Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError) as e:
        raise SigningFailed(f"{scheme} signature failed verification") from e


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


class LocalKeystoreSigner:
    backend: ClassVar[str] = "local"

    def __init__(self, sessions: SessionFactory, kek: bytes, kek_id: str) -> None:
        if len(kek) != 32:
            raise ValueError("the key-encryption key must be 32 bytes (AES-256)")
        self._sessions = sessions
        self._kek = AESGCM(kek)
        self._kek_id = kek_id

    def _seal(self, key_id: str, secret: bytes) -> dict[str, bytes]:
        dek = AESGCM.generate_key(bit_length=256)
        nonce, dek_nonce = os.urandom(12), os.urandom(12)
        aad = key_id.encode()
        return {
            "ciphertext": AESGCM(dek).encrypt(nonce, secret, aad),
            "nonce": nonce,
            "wrapped_dek": self._kek.encrypt(dek_nonce, dek, aad),
            "dek_nonce": dek_nonce,
        }

    def _open(self, row: KeystoreKey) -> bytes:
        aad = row.key_id.encode()
        try:
            dek = self._kek.decrypt(row.dek_nonce, row.wrapped_dek, aad)
            return AESGCM(dek).decrypt(row.nonce, row.ciphertext, aad)
        except Exception as e:  # InvalidTag: wrong KEK or tampered row
            raise SigningFailed(
                "keystore entry cannot be decrypted with the configured KEK", key_ref=row.key_id
            ) from e

    async def create_key(self, key_id: str, scheme: KeyScheme) -> KeyInfo:
        secret, public_key = _generate(scheme)
        sealed = self._seal(key_id, secret)
        del secret
        async with self._sessions() as session:
            # A retried activity must not mint a second key: the first insert wins.
            await session.exec(
                insert(KeystoreKey)
                .values(
                    key_id=key_id, scheme=scheme, public_key=public_key.hex(), kek_id=self._kek_id, **sealed
                )
                .on_conflict_do_nothing(index_elements=["key_id"])
            )
            await session.commit()
            row = await session.get(KeystoreKey, key_id)
        assert row is not None
        if row.scheme != scheme:
            raise SigningFailed("key id already used for another scheme", key_ref=key_id)
        return KeyInfo(key_ref=key_id, public_key=bytes.fromhex(row.public_key))

    async def sign(self, key_ref: str, scheme: KeyScheme, message: bytes) -> bytes:
        async with self._sessions() as session:
            row = await session.get(KeystoreKey, key_ref)
        if row is None or row.scheme != scheme:
            raise SigningFailed("no such key in the local keystore", key_ref=key_ref)
        secret = self._open(row)
        if scheme == "secp256k1":
            if len(message) != 32:
                raise SigningFailed("secp256k1 signs 32-byte digests only")
            signature = coincurve.PrivateKey(secret).sign_recoverable(message, hasher=None)
        else:
            signature = Ed25519PrivateKey.from_private_bytes(secret).sign(message)
        del secret
        verify_signature(scheme, bytes.fromhex(row.public_key), message, signature)
        return signature
