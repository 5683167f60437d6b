"""Local keystore for development: private keys envelope-encrypted in PostgreSQL.

Each key is sealed with AES-256-GCM under its own random data key (DEK); the DEK is wrapped
by the key-encryption key (KEK, :mod:`signers.kek`): AES-256-GCM with KEK bytes from settings,
or AWS KMS / Cloud KMS Encrypt, so that the KEK itself need never be in a file. The key id is
bound into both seals as associated data (the KMS encryption context / AAD), so a ciphertext
copied onto another row does not decrypt. Plaintext keys and DEKs exist only inside `sign`
(and `create_key`), for the duration of one signature.

Row layout: ``ciphertext``/``nonce`` seal the key under the DEK; the wrapped DEK is stored as
``dek_nonce || wrapped_dek``, split after the KEK's ``row_nonce_bytes`` (12 for the local
AES-GCM KEK, exactly the layout rows have always had; 0 for KMS KEKs, whose ciphertext blob is
all in ``wrapped_dek``). ``kek_id`` records which KEK wrapped it.
"""

from __future__ import annotations

import os
from typing import ClassVar

import coincurve
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.dialects.postgresql import insert

from core.errors import SignerUnavailable, SigningFailed
from db.engine import SessionFactory
from models.db import KeystoreKey
from signers.base import KeyInfo, KeyScheme
from signers.kek import DEK_BYTES, KeyEncryptionKey
from signers.signatures import SECP256K1_N, verify_signature  # noqa: F401  (SECP256K1_N: importable from here as before)


def _generate(scheme: KeyScheme) -> tuple[bytes, bytes]:
    if scheme == "secp256k1":
        ec_key = coincurve.PrivateKey()
        return ec_key.secret, ec_key.public_key.format(compressed=False)
    if scheme == "ed25519":
        ed_key = Ed25519PrivateKey.generate()
        secret = ed_key.private_bytes_raw()
        return secret, ed_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raise SigningFailed(f"unsupported key scheme {scheme!r}")


class LocalKeystoreSigner:
    backend: ClassVar[str] = "local"

    def __init__(self, sessions: SessionFactory, kek: KeyEncryptionKey) -> None:
        self._sessions = sessions
        self._kek = kek

    async def _seal(self, key_id: str, secret: bytes) -> dict[str, bytes]:
        dek = AESGCM.generate_key(bit_length=DEK_BYTES * 8)
        nonce = os.urandom(12)
        aad = key_id.encode()
        wrapped = await self._kek.wrap(dek, aad)
        split = getattr(self._kek, "row_nonce_bytes", 0)
        return {
            "ciphertext": AESGCM(dek).encrypt(nonce, secret, aad),
            "nonce": nonce,
            "wrapped_dek": wrapped[split:],
            "dek_nonce": wrapped[:split],
        }

    async def _open(self, row: KeystoreKey) -> bytes:
        aad = row.key_id.encode()
        ids = {"key_ref": row.key_id, "row_kek_id": row.kek_id, "kek_id": self._kek.kek_id}
        try:
            dek = await self._kek.unwrap(bytes(row.dek_nonce) + bytes(row.wrapped_dek), aad)
        except SignerUnavailable:
            raise  # KMS throttled or down: worth a retry
        except SigningFailed as e:  # wrong KEK, tampered row, KEK disabled / not found / denied
            raise SigningFailed(f"keystore entry cannot be decrypted with the configured KEK: {e.message}", **{**e.details, **ids}) from e
        try:
            if len(dek) != DEK_BYTES:
                raise ValueError("unwrapped data key has the wrong length")
            return AESGCM(dek).decrypt(row.nonce, row.ciphertext, aad)
        except Exception as e:  # InvalidTag: tampered row
            raise SigningFailed("keystore entry cannot be decrypted with the configured KEK", **ids) from e
        finally:
            del dek

    async def create_key(self, key_id: str, scheme: KeyScheme) -> KeyInfo:
        secret, public_key = _generate(scheme)
        sealed = await self._seal(key_id, secret)
        del secret
        async with self._sessions() as session:
            # A retried activity must not mint a second key: the first insert wins.
            await session.exec(
                insert(KeystoreKey)
                .values(key_id=key_id, scheme=scheme, public_key=public_key.hex(), kek_id=self._kek.kek_id, **sealed)
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
        secret = await self._open(row)
        if scheme == "secp256k1":
            if len(message) != 32:
                raise SigningFailed("secp256k1 signs 32-byte digests only")
            signature = coincurve.PrivateKey(secret).sign_recoverable(message, hasher=None)
        else:
            signature = Ed25519PrivateKey.from_private_bytes(secret).sign(message)
        del secret
        verify_signature(scheme, bytes.fromhex(row.public_key), message, signature)
        return signature
