"""Extension of moto 5.2.x's KMS backend so that it signs like real AWS KMS.

moto 5.2.5 differs from AWS KMS in ways that matter for a custody signer:

* ``Sign``/``Verify`` ignore ``MessageType``: a ``DIGEST`` message is hashed again,
  so an ECDSA signature over a keccak256 digest does not verify against the digest
  (and moto's own ``Verify`` hides that because it re-hashes too).
* No ``ECC_NIST_EDWARDS25519`` key spec, no ``ED25519_SHA_512`` /
  ``ED25519_PH_SHA_512`` signing algorithms.
* ``Sign``/``Verify``/``GetPublicKey`` work on disabled keys and keys pending deletion.
* ``Verify`` answers ``SignatureValid: false`` where AWS raises
  ``KMSInvalidSignatureException``.
* ``GetPublicKey`` returns the raw key id instead of the key ARN and no ``KeySpec``.
* ``DisableKey``/``EnableKey``/``ScheduleKeyDeletion``/``CancelKeyDeletion`` fail with an
  internal error when given a key ARN.
* ``Encrypt``/``Decrypt`` work on disabled keys, keys pending deletion and signing keys, and
  ``Decrypt`` with a ``KeyId`` other than the ciphertext's key says ``AccessDeniedException``
  where AWS says ``IncorrectKeyException``.

:func:`apply_patches` patches moto's KMS model/response classes *in the current
process*. It is meant to be called only inside the dedicated devnet server
subprocess (see :mod:`devnet.aws_kms.server`), so nothing leaks into a test process
that uses moto's in-memory mocks for something else.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

EDWARDS_KEY_SPEC = "ECC_NIST_EDWARDS25519"
ED25519_SHA_512 = "ED25519_SHA_512"
ED25519_PH_SHA_512 = "ED25519_PH_SHA_512"
MAX_MESSAGE_BYTES = 4096

# KeyUsage values AWS accepts for each key spec (CreateKey validation).
_ALLOWED_USAGE = {
    "SYMMETRIC_DEFAULT": {"ENCRYPT_DECRYPT"},
    "RSA_2048": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"},
    "RSA_3072": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"},
    "RSA_4096": {"ENCRYPT_DECRYPT", "SIGN_VERIFY"},
    "ECC_NIST_P256": {"SIGN_VERIFY", "KEY_AGREEMENT"},
    "ECC_NIST_P384": {"SIGN_VERIFY", "KEY_AGREEMENT"},
    "ECC_NIST_P521": {"SIGN_VERIFY", "KEY_AGREEMENT"},
    "ECC_SECG_P256K1": {"SIGN_VERIFY"},
    EDWARDS_KEY_SPEC: {"SIGN_VERIFY"},
    "SM2": {"ENCRYPT_DECRYPT", "SIGN_VERIFY", "KEY_AGREEMENT"},
    "HMAC_224": {"GENERATE_VERIFY_MAC"},
    "HMAC_256": {"GENERATE_VERIFY_MAC"},
    "HMAC_384": {"GENERATE_VERIFY_MAC"},
    "HMAC_512": {"GENERATE_VERIFY_MAC"},
}

_HASH_FOR_ALGORITHM: dict[str, type[hashes.HashAlgorithm]] = {
    "ECDSA_SHA_256": hashes.SHA256,
    "ECDSA_SHA_384": hashes.SHA384,
    "ECDSA_SHA_512": hashes.SHA512,
    "RSASSA_PSS_SHA_256": hashes.SHA256,
    "RSASSA_PSS_SHA_384": hashes.SHA384,
    "RSASSA_PSS_SHA_512": hashes.SHA512,
    "RSASSA_PKCS1_V1_5_SHA_256": hashes.SHA256,
    "RSASSA_PKCS1_V1_5_SHA_384": hashes.SHA384,
    "RSASSA_PKCS1_V1_5_SHA_512": hashes.SHA512,
}

_applied = False


# --------------------------------------------------------------------------- errors


@functools.cache
def _errors() -> Any:
    """Exception classes, created lazily so importing this module needs no moto."""
    from moto.core.exceptions import JsonRESTError

    class KmsError(JsonRESTError):
        code = 400

        def __init__(self, error_type: str, message: str, status: int = 400):
            super().__init__(error_type, message)
            self.code = status

    return KmsError


def _err(error_type: str, message: str, status: int = 400) -> Exception:
    return _errors()(error_type, message, status)


# ------------------------------------------------------------------ Ed25519 key model


class Ed25519PrivateKey:
    """Key material for ECC_NIST_EDWARDS25519 (duck-types moto's AbstractPrivateKey)."""

    valid_signing_algorithms = [ED25519_SHA_512, ED25519_PH_SHA_512]

    def __init__(self) -> None:
        self.private_key = ed25519.Ed25519PrivateKey.generate()

    def sign(self, message: bytes, signing_algorithm: str) -> bytes:  # moto API (RAW)
        return _sign(self, EDWARDS_KEY_SPEC, message, "RAW", signing_algorithm)

    def verify(self, message: bytes, signature: bytes, signing_algorithm: str) -> bool:
        return _verify(self, EDWARDS_KEY_SPEC, message, "RAW", signature, signing_algorithm)

    def public_key(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            encoding=serialization.Encoding.DER,
            format=serialization.PublicFormat.SubjectPublicKeyInfo,
        )


def _ed25519ph(private_or_public: Any, digest: bytes, signature: bytes | None = None) -> Any:
    """Ed25519ph (RFC 8032 §5.1, phflag=1, empty context) over a 64-byte digest.

    AWS: "When you specify ED25519_PH_SHA_512 with MessageType:DIGEST, KMS still performs
    the SHA-512 prehash", i.e. the Ed25519ph input message *is* the caller's digest.
    cryptography has no Ed25519ph, pycryptodome does (it is pulled in by eth-keyfile).
    """
    try:
        from Crypto.Hash import SHA512
        from Crypto.Signature import eddsa
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise _err(
            "UnsupportedOperationException",
            "ED25519_PH_SHA_512 needs pycryptodome in the devnet server environment",
        ) from exc
    if signature is None:
        seed = private_or_public.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        key = eddsa.import_private_key(seed)
        return eddsa.new(key, "rfc8032").sign(SHA512.new(digest))
    raw_pub = private_or_public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = eddsa.import_public_key(raw_pub)
    try:
        eddsa.new(key, "rfc8032").verify(SHA512.new(digest), signature)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------- sign/verify core


def _algorithms_for(key_spec: str, key_usage: str | None) -> list[str] | None:
    if key_usage != "SIGN_VERIFY":
        return None
    if key_spec == EDWARDS_KEY_SPEC:
        return [ED25519_SHA_512, ED25519_PH_SHA_512]
    if key_spec in ("ECC_NIST_P256", "ECC_SECG_P256K1"):
        return ["ECDSA_SHA_256"]
    if key_spec == "ECC_NIST_P384":
        return ["ECDSA_SHA_384"]
    if key_spec == "ECC_NIST_P521":
        return ["ECDSA_SHA_512"]
    if key_spec.startswith("RSA_"):
        return sorted(a for a in _HASH_FOR_ALGORITHM if a.startswith("RSASSA"))
    if key_spec == "SM2":
        return ["SM2DSA"]
    return []


def _check_message(key_spec: str, message: bytes, message_type: str, algorithm: str) -> None:
    if message_type not in ("RAW", "DIGEST"):
        raise _err(
            "ValidationException",
            f"1 validation error detected: Value '{message_type}' at 'messageType' failed to "
            "satisfy constraint: Member must satisfy enum value set: [RAW, DIGEST, EXTERNAL_MU]"
            if message_type != "EXTERNAL_MU"
            else "MessageType EXTERNAL_MU is only valid for ML-DSA keys",
        )
    if key_spec == EDWARDS_KEY_SPEC:
        if algorithm == ED25519_SHA_512 and message_type != "RAW":
            raise _err(
                "ValidationException",
                "The ED25519_SHA_512 signing algorithm requires MessageType RAW.",
            )
        if algorithm == ED25519_PH_SHA_512:
            if message_type != "DIGEST":
                raise _err(
                    "ValidationException",
                    "The ED25519_PH_SHA_512 signing algorithm requires MessageType DIGEST.",
                )
            if len(message) != 64:
                raise _err(
                    "ValidationException",
                    f"Digest is invalid length for algorithm {algorithm}.",
                )
        return
    if message_type == "DIGEST":
        hash_cls = _HASH_FOR_ALGORITHM.get(algorithm)
        if hash_cls is None:
            raise _err(
                "UnsupportedOperationException",
                f"MessageType DIGEST is not supported for {algorithm} in the devnet.",
            )
        if len(message) != hash_cls.digest_size:
            raise _err(
                "ValidationException",
                f"Digest is invalid length for algorithm {algorithm}.",
            )


def _rsa_padding(algorithm: str, hash_alg: hashes.HashAlgorithm) -> Any:
    if algorithm.startswith("RSASSA_PSS"):
        # AWS KMS uses a salt length equal to the digest length.
        return padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
    return padding.PKCS1v15()


def _sign(key_material: Any, key_spec: str, message: bytes, message_type: str, algorithm: str) -> bytes:
    pk = key_material.private_key
    if key_spec == EDWARDS_KEY_SPEC:
        if algorithm == ED25519_SHA_512:
            return pk.sign(message)  # 64-byte R || S (RFC 8032)
        return _ed25519ph(pk, message)
    hash_cls = _HASH_FOR_ALGORITHM.get(algorithm)
    if hash_cls is None:  # SM2 and friends: fall back to moto's implementation
        return key_material.__class__.sign(key_material, message, algorithm)
    hash_alg = hash_cls()
    prehash: Any = Prehashed(hash_alg) if message_type == "DIGEST" else hash_alg
    if isinstance(pk, ec.EllipticCurvePrivateKey):
        return pk.sign(message, ec.ECDSA(prehash))  # DER (ANSI X9.62 / RFC 3279)
    if isinstance(pk, rsa.RSAPrivateKey):
        return pk.sign(message, _rsa_padding(algorithm, hash_alg), prehash)
    raise _err("UnsupportedOperationException", f"Cannot sign with {key_spec}")


def _verify(key_material: Any, key_spec: str, message: bytes, message_type: str, signature: bytes, algorithm: str) -> bool:
    pub = key_material.private_key.public_key()
    try:
        if key_spec == EDWARDS_KEY_SPEC:
            if algorithm == ED25519_SHA_512:
                pub.verify(signature, message)
                return True
            return bool(_ed25519ph(pub, message, signature))
        hash_cls = _HASH_FOR_ALGORITHM.get(algorithm)
        if hash_cls is None:
            return bool(key_material.__class__.verify(key_material, message, signature, algorithm))
        hash_alg = hash_cls()
        prehash: Any = Prehashed(hash_alg) if message_type == "DIGEST" else hash_alg
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(signature, message, ec.ECDSA(prehash))
        else:
            pub.verify(signature, message, _rsa_padding(algorithm, hash_alg), prehash)
        return True
    except (InvalidSignature, ValueError):
        return False


# ---------------------------------------------------------------------- the patches


def _usable_key(response: Any, key_id: str, operation: str) -> Any:
    """Resolve a key id/ARN/alias and apply AWS's key-state rules for crypto operations."""
    response._validate_key_id(key_id)
    key = response.kms_backend.describe_key(key_id)
    if key.key_state == "Disabled":
        raise _err("DisabledException", f"{key.arn} is disabled.")
    if key.key_state == "PendingDeletion":
        raise _err("KMSInvalidStateException", f"{key.arn} is pending deletion.")
    if key.key_state not in ("Enabled",):
        raise _err("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")
    return key


def _signing_request(response: Any, operation: str) -> tuple[Any, bytes, str, str]:
    key_id = response._get_param("KeyId")
    message = response._get_param("Message")
    message_type = response._get_param("MessageType") or "RAW"
    algorithm = response._get_param("SigningAlgorithm")
    if not key_id:
        raise _err("ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
    if not algorithm:
        raise _err(
            "ValidationException",
            "1 validation error detected: Value null at 'signingAlgorithm' failed to satisfy constraint: Member must not be null",
        )
    if isinstance(message, str):
        message = message.encode("utf-8")
    if not message:
        raise _err(
            "ValidationException",
            "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length greater than or equal to 1",
        )
    if len(message) > MAX_MESSAGE_BYTES:
        raise _err(
            "ValidationException",
            "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length less than or equal to 4096",
        )
    key = _usable_key(response, key_id, operation)
    if key.key_usage != "SIGN_VERIFY":
        raise _err(
            "InvalidKeyUsageException",
            f"{key.arn} key usage is {key.key_usage} which is not valid for {operation}.",
        )
    valid = _algorithms_for(key.key_spec, key.key_usage) or []
    if algorithm not in valid:
        raise _err(
            "InvalidKeyUsageException",
            f"Algorithm {algorithm} is incompatible with key spec {key.key_spec}.",
        )
    _check_message(key.key_spec, message, message_type, algorithm)
    return key, message, message_type, algorithm


def _response_sign(self: Any) -> str:
    key, message, message_type, algorithm = _signing_request(self, "Sign")
    signature = _sign(key.private_key, key.key_spec, message, message_type, algorithm)
    return json.dumps(
        {
            "KeyId": key.arn,
            "Signature": base64.b64encode(signature).decode("ascii"),
            "SigningAlgorithm": algorithm,
        }
    )


def _response_verify(self: Any) -> str:
    key, message, message_type, algorithm = _signing_request(self, "Verify")
    signature = self._get_param("Signature")
    if isinstance(signature, str):
        signature = base64.b64decode(signature.encode("ascii"))
    if not signature:
        raise _err(
            "ValidationException",
            "1 validation error detected: Value at 'signature' failed to satisfy constraint: Member must have length greater than or equal to 1",
        )
    if not _verify(key.private_key, key.key_spec, message, message_type, signature, algorithm):
        raise _err("KMSInvalidSignatureException", "")
    return json.dumps({"KeyId": key.arn, "SignatureValid": True, "SigningAlgorithm": algorithm})


def _response_get_public_key(self: Any) -> str:
    key = _usable_key(self, self._get_param("KeyId"), "GetPublicKey")
    if key.key_spec == "SYMMETRIC_DEFAULT" or key.key_spec.startswith("HMAC"):
        raise _err(
            "UnsupportedOperationException",
            f"{key.arn} key usage is {key.key_usage}; GetPublicKey needs an asymmetric KMS key.",
        )
    body: dict[str, Any] = {
        "KeyId": key.arn,
        "PublicKey": base64.b64encode(key.private_key.public_key()).decode("ascii"),
        "CustomerMasterKeySpec": key.key_spec,
        "KeySpec": key.key_spec,
        "KeyUsage": key.key_usage,
    }
    if key.signing_algorithms:
        body["SigningAlgorithms"] = key.signing_algorithms
    if key.encryption_algorithms:
        body["EncryptionAlgorithms"] = key.encryption_algorithms
    return json.dumps(body)


def _response_encrypt(self: Any) -> str:
    """Encrypt with a SYMMETRIC_DEFAULT key, under AWS's key-state and key-usage rules."""
    key_id = self._get_param("KeyId")
    if not key_id:
        raise _err("ValidationException", "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
    plaintext = self._get_param("Plaintext")
    if isinstance(plaintext, str):
        plaintext = plaintext.encode("utf-8")
    if not plaintext:
        raise _err(
            "ValidationException",
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length greater than or equal to 1",
        )
    key = _usable_key(self, key_id, "Encrypt")
    if key.key_usage != "ENCRYPT_DECRYPT":
        raise _err("InvalidKeyUsageException", f"{key.arn} key usage is {key.key_usage} which is not valid for Encrypt.")
    algorithm = self._get_param("EncryptionAlgorithm") or "SYMMETRIC_DEFAULT"
    if key.key_spec != "SYMMETRIC_DEFAULT":  # RSA / SM2 encryption: moto's own
        return _original_encrypt(self)
    if algorithm != "SYMMETRIC_DEFAULT":
        raise _err("InvalidKeyUsageException", f"Algorithm {algorithm} is incompatible with key spec SYMMETRIC_DEFAULT.")
    blob, arn = self.kms_backend.encrypt(key_id=key_id, plaintext=plaintext, encryption_context=self._get_param("EncryptionContext", {}))
    return json.dumps({"CiphertextBlob": base64.b64encode(blob).decode("ascii"), "KeyId": arn, "EncryptionAlgorithm": algorithm})


def _response_decrypt(self: Any) -> str:
    """Decrypt a SYMMETRIC_DEFAULT ciphertext; the key named inside it must be usable, and a
    given KeyId must name that same key (IncorrectKeyException otherwise)."""
    from moto.kms.exceptions import InvalidCiphertextException
    from moto.kms.utils import _deserialize_ciphertext_blob

    blob = self._get_param("CiphertextBlob")
    if not blob:
        raise _err(
            "ValidationException",
            "1 validation error detected: Value at 'ciphertextBlob' failed to satisfy constraint: Member must have length greater than or equal to 1",
        )
    try:
        inner_key_id = _deserialize_ciphertext_blob(blob).key_id
    except Exception:
        raise InvalidCiphertextException() from None
    if inner_key_id not in self.kms_backend.keys:
        raise InvalidCiphertextException()
    key = self.kms_backend.keys[inner_key_id]
    requested = self._get_param("KeyId")
    if requested:
        self._validate_key_id(requested)
        if self.kms_backend.any_id_to_key_id(requested) != inner_key_id:
            raise _err(
                "IncorrectKeyException",
                "The key ID in the request does not identify a KMS key that can perform this operation.",
            )
    if key.key_spec != "SYMMETRIC_DEFAULT":
        return _original_decrypt(self)
    key = _usable_key(self, key.arn, "Decrypt")
    algorithm = self._get_param("EncryptionAlgorithm") or "SYMMETRIC_DEFAULT"
    if algorithm != "SYMMETRIC_DEFAULT":
        raise _err("InvalidKeyUsageException", f"Algorithm {algorithm} is incompatible with key spec SYMMETRIC_DEFAULT.")
    plaintext, arn = self.kms_backend.decrypt(ciphertext_blob=blob, encryption_context=self._get_param("EncryptionContext", {}))
    return json.dumps({"Plaintext": base64.b64encode(plaintext).decode("ascii"), "KeyId": arn, "EncryptionAlgorithm": algorithm})


_original_encrypt: Any = None
_original_decrypt: Any = None


def apply_patches() -> None:
    """Patch moto's KMS backend in this process (idempotent)."""
    global _applied, _original_encrypt, _original_decrypt
    if _applied:
        return
    from moto.kms import models, responses

    original_generate = models.generate_private_key

    def generate_private_key(key_spec: str) -> Any:
        if key_spec == EDWARDS_KEY_SPEC:
            return Ed25519PrivateKey()
        return original_generate(key_spec)

    models.generate_private_key = generate_private_key

    # --- key specs / usage validation
    original_create_key = models.KmsBackend.create_key

    def create_key(self: Any, policy: Any, key_usage: Any, key_spec: Any, *args: Any, **kwargs: Any) -> Any:
        key_spec = key_spec or "SYMMETRIC_DEFAULT"
        key_usage = key_usage or "ENCRYPT_DECRYPT"
        if key_spec not in _ALLOWED_USAGE:
            raise _err(
                "ValidationException",
                f"1 validation error detected: Value '{key_spec}' at 'keySpec' failed to satisfy "
                f"constraint: Member must satisfy enum value set: {sorted(_ALLOWED_USAGE)}",
            )
        if key_usage not in _ALLOWED_USAGE[key_spec]:
            raise _err(
                "ValidationException",
                f"KeyUsage {key_usage} is not compatible with KeySpec {key_spec}.",
            )
        return original_create_key(self, policy, key_usage, key_spec, *args, **kwargs)

    models.KmsBackend.create_key = create_key
    models.KmsBackend._KmsBackend__ensure_valid_key_spec = lambda self, spec: None  # validated above

    # --- key metadata
    def signing_algorithms(self: Any) -> Any:
        return _algorithms_for(self.key_spec, self.key_usage)

    models.Key.signing_algorithms = property(signing_algorithms)
    original_to_dict = models.Key.to_dict

    def to_dict(self: Any) -> dict[str, Any]:
        d = original_to_dict(self)
        d["KeyMetadata"] = {k: v for k, v in d["KeyMetadata"].items() if v is not None}
        return d

    models.Key.to_dict = to_dict

    # --- key-state operations accept ARNs like AWS does
    for name in ("disable_key", "enable_key", "cancel_key_deletion", "schedule_key_deletion"):
        original = getattr(models.KmsBackend, name)

        def wrapper(self: Any, key_id: str, *args: Any, _orig: Any = original, **kwargs: Any) -> Any:
            return _orig(self, self.any_id_to_key_id(key_id), *args, **kwargs)

        setattr(models.KmsBackend, name, wrapper)

    # --- Sign / Verify / GetPublicKey
    responses.KmsResponse.sign = _response_sign
    responses.KmsResponse.verify = _response_verify
    responses.KmsResponse.get_public_key = _response_get_public_key

    # --- Encrypt / Decrypt (symmetric keys)
    _original_encrypt = responses.KmsResponse.encrypt
    _original_decrypt = responses.KmsResponse.decrypt
    responses.KmsResponse.encrypt = _response_encrypt
    responses.KmsResponse.decrypt = _response_decrypt
    _applied = True
