"""Key-encryption keys (KEKs) for the local keystore: what wraps each key's data key (DEK).

``CUSTODY_KEYSTORE_KEK`` picks one:

* base64 of 32 bytes -> :class:`LocalAesGcmKek`: AES-256-GCM in this process (development, or
  a KEK injected from a secret store). Wrapped form ``nonce(12) || ciphertext+tag``; rows keep
  storing it split as ``dek_nonce`` / ``wrapped_dek``, byte for byte as before.
* ``aws-kms:<key id | alias/name | key or alias ARN>`` -> :class:`AwsKmsKek`: a SYMMETRIC_DEFAULT
  key; ``Encrypt`` / ``Decrypt`` with the key id bound as encryption context.
* ``gcp-kms:projects/…/cryptoKeys/<k>`` -> :class:`GcpKmsKek`: an ENCRYPT_DECRYPT key;
  ``Encrypt`` / ``Decrypt`` with the key id as additional authenticated data, CRC32C checked
  both ways as Google documents.

With a KMS KEK the key-encryption key never exists outside the KMS: unsealing a keystore key
needs a KMS ``Decrypt`` call (audited by CloudTrail / Cloud Audit Logs) for every signature.
Errors follow the signers' rules: KMS throttling/outage -> SignerUnavailable (retry), a
disabled/missing key, denied access or a ciphertext that does not authenticate -> SigningFailed.
"""

from __future__ import annotations

import base64
import os
from typing import Any, ClassVar, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import SignerUnavailable, SigningFailed
from core.settings import AwsKmsSettings, GcpKmsSettings, Settings
from signers.crc32c import crc32c

DEK_BYTES = 32
AWS_PREFIX = "aws-kms:"
GCP_PREFIX = "gcp-kms:"
# AWS encryption context (logged in CloudTrail): which keystore key a data key belongs to.
AWS_CONTEXT_KEY = "custody-keystore-key-id"
AWS_CONTEXT_KEY_B64 = "custody-keystore-aad-b64"  # for AAD that is not UTF-8


class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys. `aad` binds a wrapped DEK to its keystore key id."""

    kek_id: str

    async def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """Raises SignerUnavailable (retry) or SigningFailed."""
        ...

    async def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """The DEK; SigningFailed if `wrapped` does not authenticate under this KEK and `aad`."""
        ...


class LocalAesGcmKek:
    """The KEK bytes in memory: AES-256-GCM, a random 12-byte nonce per wrap."""

    NONCE_BYTES: ClassVar[int] = 12
    # LocalKeystoreSigner stores the first `row_nonce_bytes` of a wrapped DEK in `dek_nonce`.
    row_nonce_bytes: ClassVar[int] = NONCE_BYTES

    def __init__(self, kek: bytes, kek_id: str) -> None:
        if len(kek) != 32:
            raise ValueError("the key-encryption key must be 32 bytes (AES-256)")
        self._aead = AESGCM(kek)
        self.kek_id = kek_id

    async def wrap(self, dek: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(self.NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, dek, aad)

    async def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[: self.NONCE_BYTES], wrapped[self.NONCE_BYTES :], aad)
        except (InvalidTag, ValueError) as e:
            raise SigningFailed("data key does not unwrap with the configured local KEK", kek_id=self.kek_id) from e


def _aws_context(aad: bytes) -> dict[str, str]:
    try:
        return {AWS_CONTEXT_KEY: aad.decode("utf-8")}
    except UnicodeDecodeError:
        return {AWS_CONTEXT_KEY_B64: base64.b64encode(aad).decode("ascii")}


def _arn_region(key: str) -> str | None:
    parts = key.split(":")
    return parts[3] if key.startswith("arn:") and len(parts) > 5 and parts[3] else None


class AwsKmsKek:
    """A SYMMETRIC_DEFAULT AWS KMS key. IAM: kms:Encrypt and kms:Decrypt on it."""

    row_nonce_bytes: ClassVar[int] = 0

    def __init__(self, key: str, settings: AwsKmsSettings, kek_id: str, client: Any = None) -> None:
        # AwsKmsSigner is used for its client plumbing only: the thread pool and the
        # translation of botocore errors into SignerUnavailable / SigningFailed.
        from signers.aws_kms import AwsKmsSigner

        region = _arn_region(key)
        if region and region != settings.region:
            settings = settings.model_copy(update={"region": region})
        self.key = key
        self.kek_id = kek_id
        self._kms = AwsKmsSigner(settings, client=client)

    def close(self) -> None:
        self._kms.close()

    async def wrap(self, dek: bytes, aad: bytes) -> bytes:
        resp = await self._kms._call(
            "encrypt",
            KeyId=self.key,
            Plaintext=dek,
            EncryptionContext=_aws_context(aad),
            EncryptionAlgorithm="SYMMETRIC_DEFAULT",
        )
        return bytes(resp["CiphertextBlob"])

    async def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        # KeyId pins the KEK: a ciphertext made under any other key is refused (IncorrectKeyException).
        resp = await self._kms._call(
            "decrypt",
            KeyId=self.key,
            CiphertextBlob=wrapped,
            EncryptionContext=_aws_context(aad),
            EncryptionAlgorithm="SYMMETRIC_DEFAULT",
        )
        return bytes(resp["Plaintext"])


class GcpKmsKek:
    """A Cloud KMS ENCRYPT_DECRYPT CryptoKey. IAM: roles/cloudkms.cryptoKeyEncrypterDecrypter on it."""

    row_nonce_bytes: ClassVar[int] = 0

    def __init__(self, crypto_key: str, settings: GcpKmsSettings, kek_id: str, client: Any = None) -> None:
        # GcpKmsSigner is used for its client plumbing only: lazy client, retry window,
        # translation of gRPC errors into SignerUnavailable / SigningFailed.
        from signers.gcp_kms import GcpKmsSigner

        self.crypto_key = crypto_key
        self.kek_id = kek_id
        self._kms = GcpKmsSigner(settings, client=client)

    async def aclose(self) -> None:
        await self._kms.aclose()

    async def wrap(self, dek: bytes, aad: bytes) -> bytes:
        resp = await self._kms._call(
            "encrypt",
            {
                "name": self.crypto_key,
                "plaintext": dek,
                "plaintext_crc32c": crc32c(dek),
                "additional_authenticated_data": aad,
                "additional_authenticated_data_crc32c": crc32c(aad),
            },
        )
        if (
            not resp.verified_plaintext_crc32c
            or not resp.verified_additional_authenticated_data_crc32c
            or not resp.name.startswith(self.crypto_key + "/cryptoKeyVersions/")
            or resp.ciphertext_crc32c != crc32c(resp.ciphertext)
        ):
            # Corrupted in transit (either way): Google's guidance is to retry.
            raise SignerUnavailable("Cloud KMS Encrypt answer failed its integrity check", kek=self.crypto_key)
        return bytes(resp.ciphertext)

    async def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        resp = await self._kms._call(
            "decrypt",
            {
                "name": self.crypto_key,
                "ciphertext": wrapped,
                "ciphertext_crc32c": crc32c(wrapped),
                "additional_authenticated_data": aad,
                "additional_authenticated_data_crc32c": crc32c(aad),
            },
        )
        if resp.plaintext_crc32c != crc32c(resp.plaintext):
            raise SignerUnavailable("Cloud KMS Decrypt answer failed its integrity check", kek=self.crypto_key)
        return bytes(resp.plaintext)


def kek_from_settings(settings: Settings) -> KeyEncryptionKey:
    """The KEK `CUSTODY_KEYSTORE_KEK` names; KMS clients are reached lazily (first wrap/unwrap)."""
    value = settings.keystore_kek.get_secret_value().strip()
    if value.startswith(AWS_PREFIX):
        return AwsKmsKek(value[len(AWS_PREFIX) :], settings.aws_kms, settings.keystore_kek_id)
    if value.startswith(GCP_PREFIX):
        return GcpKmsKek(value[len(GCP_PREFIX) :], settings.gcp_kms, settings.keystore_kek_id)
    return LocalAesGcmKek(settings.keystore_kek_bytes, settings.keystore_kek_id)
