"""What the cloud KMS signers share: public-key decoding and DER ECDSA -> r||s||v."""

from __future__ import annotations

import coincurve
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
    load_pem_public_key,
)

from core.errors import SigningFailed
from signers.base import KeyScheme
from signers.signatures import SECP256K1_N, verify_signature


def public_key_bytes(scheme: KeyScheme, encoded: bytes, *, pem: bool = False) -> bytes:
    """SubjectPublicKeyInfo (DER, or PEM) -> 65-byte uncompressed secp256k1 point / 32-byte Ed25519."""
    try:
        key = load_pem_public_key(encoded) if pem else load_der_public_key(encoded)
    except ValueError as e:
        raise SigningFailed("KMS returned an unreadable public key") from e
    if scheme == "secp256k1" and isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256K1):
        return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    if scheme == "ed25519" and isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    raise SigningFailed(f"KMS key is not a {scheme} key", key_type=type(key).__name__)


def recoverable_signature(der: bytes, digest: bytes, public_key: bytes) -> bytes:
    """DER ECDSA signature over `digest` -> r||s||recovery_id with low s (EIP-2), the recovery id
    being the one that gives back `public_key`. SigningFailed if neither does."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError as e:
        raise SigningFailed("KMS returned a malformed ECDSA signature") from e
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise SigningFailed("KMS returned an out-of-range ECDSA signature")
    if s > SECP256K1_N // 2:
        s = SECP256K1_N - s
    rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    for v in (0, 1):
        candidate = rs + bytes([v])
        try:
            recovered = coincurve.PublicKey.from_signature_and_message(candidate, digest, hasher=None)
        except ValueError:
            continue
        if recovered.format(compressed=False) == public_key:
            return candidate
    raise SigningFailed("KMS signature does not recover to the key's public key")


def finish_signature(scheme: KeyScheme, public_key: bytes, message: bytes, raw: bytes) -> bytes:
    """Turn what KMS returned into the Signer protocol's form and verify it before it leaves."""
    signature = recoverable_signature(raw, message, public_key) if scheme == "secp256k1" else bytes(raw)
    verify_signature(scheme, public_key, message, signature)
    return signature


def check_message(scheme: KeyScheme, message: bytes) -> None:
    if scheme == "secp256k1" and len(message) != 32:
        raise SigningFailed("secp256k1 signs 32-byte digests only")
    if scheme not in ("secp256k1", "ed25519"):
        raise SigningFailed(f"unsupported key scheme {scheme!r}")
