"""The local keystore against real PostgreSQL: envelope encryption, idempotent creation,
verified signatures, and nothing usable without the key-encryption key."""

from __future__ import annotations

import os
import uuid

import coincurve
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.errors import SigningFailed
from models.db import KeystoreKey
from signers.local import LocalKeystoreSigner

KEK = os.urandom(32)


async def test_keys_are_created_once_and_sign_verifiably(sessions):
    signer = LocalKeystoreSigner(sessions, KEK, "kek-test")
    key_id = f"k-{uuid.uuid4()}"
    first = await signer.create_key(key_id, "secp256k1")
    again = await signer.create_key(key_id, "secp256k1")
    assert first == again and len(first.public_key) == 65

    digest = os.urandom(32)
    signature = await signer.sign(key_id, "secp256k1", digest)
    recovered = coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    assert recovered.format(compressed=False) == first.public_key

    ed = await signer.create_key(f"e-{uuid.uuid4()}", "ed25519")
    message = b"solana message bytes"
    Ed25519PublicKey.from_public_bytes(ed.public_key).verify(await signer.sign(ed.key_ref, "ed25519", message), message)


async def test_no_plaintext_at_rest_and_a_wrong_kek_cannot_sign(sessions):
    signer = LocalKeystoreSigner(sessions, KEK, "kek-test")
    key_id = f"k-{uuid.uuid4()}"
    await signer.create_key(key_id, "secp256k1")
    async with sessions() as session:
        row = await session.get(KeystoreKey, key_id)
    assert row is not None and len(row.ciphertext) == 32 + 16  # secret + GCM tag, no plaintext
    stranger = LocalKeystoreSigner(sessions, os.urandom(32), "other")
    with pytest.raises(SigningFailed, match="cannot be decrypted"):
        await stranger.sign(key_id, "secp256k1", os.urandom(32))


async def test_a_ciphertext_moved_to_another_key_id_does_not_decrypt(sessions):
    signer = LocalKeystoreSigner(sessions, KEK, "kek-test")
    source, target = f"k-{uuid.uuid4()}", f"k-{uuid.uuid4()}"
    await signer.create_key(source, "secp256k1")
    await signer.create_key(target, "secp256k1")
    async with sessions() as session, session.begin():
        a = await session.get(KeystoreKey, source)
        b = await session.get(KeystoreKey, target)
        b.ciphertext, b.nonce, b.wrapped_dek, b.dek_nonce = a.ciphertext, a.nonce, a.wrapped_dek, a.dek_nonce
        session.add(b)
    with pytest.raises(SigningFailed):
        await signer.sign(target, "secp256k1", os.urandom(32))
