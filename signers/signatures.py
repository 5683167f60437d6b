"""Signature checks every signer backend applies before a signature leaves it: the local keystore
after signing, the KMS backends after normalizing what the KMS returned. Kept apart from the
backends so that none of them imports another (signers.local <-> signers.kek <-> the KMS ones)."""

from __future__ import annotations

import coincurve
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.errors import SigningFailed
from signers.base import KeyScheme

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


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
