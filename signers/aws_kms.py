"""AWS KMS signer: one asymmetric KMS key per custody key, found again by its alias.

Keys never leave KMS. A custody key id maps to the alias ``alias/<alias_prefix>/<key id>``;
``key_ref`` is the key ARN. secp256k1 keys are ``ECC_SECG_P256K1`` signing a 32-byte digest
(``MessageType=DIGEST``, ``ECDSA_SHA_256``); the DER answer becomes r||s||v with low s. Ed25519
keys are ``ECC_NIST_EDWARDS25519`` signing the raw message (``ED25519_SHA_512``, ``RAW``). Every
signature is verified locally against the key's public key before it is returned.

boto3 is blocking: calls run on a small thread pool of this signer, with one shared client.
botocore retries once at most; Temporal's activity retry policy is the real retry loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ClassVar, NoReturn

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ParamValidationError

from core import metrics
from core.errors import SignerUnavailable, SigningFailed
from core.settings import AwsKmsSettings
from signers._kms import check_message, finish_signature, public_key_bytes
from signers.base import KeyInfo, KeyScheme

log = logging.getLogger("custody.signers.aws_kms")

KEY_SPECS: dict[str, str] = {"secp256k1": "ECC_SECG_P256K1", "ed25519": "ECC_NIST_EDWARDS25519"}
SIGNING: dict[str, tuple[str, str]] = {  # scheme -> (SigningAlgorithm, MessageType)
    "secp256k1": ("ECDSA_SHA_256", "DIGEST"),
    "ed25519": ("ED25519_SHA_512", "RAW"),
}
KEY_ID_TAG = "custody-key-id"
ORPHAN_DELETION_DAYS = 7

# Worth retrying: the same call may pass later.
TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "ServiceUnavailableException",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_ALIAS_SAFE = re.compile(r"^[a-zA-Z0-9/_-]{1,200}$")
POOL_SIZE = 16


def alias_name(prefix: str, key_id: str) -> str:
    """``alias/<prefix>/<key id>``; a key id with characters aliases do not allow is mapped
    deterministically to a readable part plus a hash."""
    if not _ALIAS_SAFE.fullmatch(key_id):
        readable = re.sub(r"[^a-zA-Z0-9_-]", "_", key_id)[:64]
        key_id = f"{readable}-{hashlib.sha256(key_id.encode()).hexdigest()[:16]}"
    return f"alias/{prefix.strip('/')}/{key_id}"


def _error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code") or "Unknown")


class AwsKmsSigner:
    backend: ClassVar[str] = "aws-kms"

    def __init__(self, settings: AwsKmsSettings, client: Any = None) -> None:
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="aws-kms")
        if client is None:
            import boto3

            client = boto3.session.Session().client(
                "kms",
                region_name=settings.region,
                endpoint_url=settings.endpoint_url,
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": 2},
                    connect_timeout=5,
                    read_timeout=15,
                    max_pool_connections=POOL_SIZE,
                ),
            )
        self._client = client
        self._public_keys: dict[str, bytes] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    # --- plumbing ----------------------------------------------------------------------------
    async def _call(self, operation: str, expected: frozenset[str] = frozenset(), **params: Any) -> dict[str, Any]:
        """Run one KMS call on the pool; ClientErrors whose code is in `expected` pass through
        untranslated (and uncounted), all others become SignerUnavailable / SigningFailed."""
        loop = asyncio.get_running_loop()
        fn = getattr(self._client, operation)
        try:
            return await loop.run_in_executor(self._pool, partial(fn, **params))
        except ClientError as e:
            if _error_code(e) in expected:
                raise
            self._raise(operation, e)
        except (NoCredentialsError, ParamValidationError) as e:
            metrics.KMS_ERRORS.labels(backend=self.backend, code=type(e).__name__).inc()
            raise SigningFailed(f"AWS KMS {operation}: {e}", code=type(e).__name__) from e
        except BotoCoreError as e:  # connection refused/reset, timeouts, credential fetch hiccups
            metrics.KMS_ERRORS.labels(backend=self.backend, code=type(e).__name__).inc()
            raise SignerUnavailable(f"AWS KMS {operation}: {e}", code=type(e).__name__) from e

    def _raise(self, operation: str, e: ClientError) -> NoReturn:
        code = _error_code(e)
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = e.response.get("Error", {}).get("Message") or code
        metrics.KMS_ERRORS.labels(backend=self.backend, code=code).inc()
        if code in TRANSIENT_CODES or status >= 500:
            raise SignerUnavailable(f"AWS KMS {operation}: {message}", code=code) from e
        # AccessDeniedException, NotFoundException, DisabledException, KMSInvalidStateException,
        # InvalidKeyUsageException, ValidationException, LimitExceededException, ...
        raise SigningFailed(f"AWS KMS {operation}: {message}", code=code) from e

    async def _describe_alias(self, alias: str) -> dict[str, Any] | None:
        try:
            metadata: dict[str, Any] = (await self._call("describe_key", frozenset({"NotFoundException"}), KeyId=alias))["KeyMetadata"]
            return metadata
        except ClientError:
            return None

    async def _public_key(self, key_ref: str, scheme: KeyScheme) -> bytes:
        cached = self._public_keys.get(key_ref)
        if cached is not None:
            return cached
        resp = await self._call("get_public_key", KeyId=key_ref)
        if resp.get("KeySpec") != KEY_SPECS[scheme]:
            raise SigningFailed("AWS KMS key has another key spec", key_ref=key_ref, key_spec=resp.get("KeySpec"))
        public_key = public_key_bytes(scheme, resp["PublicKey"])
        self._public_keys[key_ref] = public_key
        return public_key

    # --- Signer ------------------------------------------------------------------------------
    async def create_key(self, key_id: str, scheme: KeyScheme) -> KeyInfo:
        if scheme not in KEY_SPECS:
            raise SigningFailed(f"unsupported key scheme {scheme!r}")
        alias = alias_name(self._settings.alias_prefix, key_id)
        meta = await self._describe_alias(alias)
        if meta is None:
            created = (
                await self._call(
                    "create_key",
                    KeySpec=KEY_SPECS[scheme],
                    KeyUsage="SIGN_VERIFY",
                    Description=f"custody {scheme} key {key_id}",
                    Tags=[{"TagKey": KEY_ID_TAG, "TagValue": key_id[:256]}],
                )
            )["KeyMetadata"]
            try:
                await self._call("create_alias", frozenset({"AlreadyExistsException"}), AliasName=alias, TargetKeyId=created["KeyId"])
                meta = created
            except ClientError as e:
                # A concurrent attempt for the same key id won: use its key, retire ours.
                log.info("alias %s already taken; scheduling deletion of orphan %s", alias, created["Arn"])
                try:
                    await self._call("schedule_key_deletion", KeyId=created["KeyId"], PendingWindowInDays=ORPHAN_DELETION_DAYS)
                except (SigningFailed, SignerUnavailable):
                    log.warning("could not schedule deletion of orphan KMS key %s", created["Arn"])
                meta = await self._describe_alias(alias)
                if meta is None:
                    raise SignerUnavailable("KMS alias vanished during key creation", alias=alias) from e
        if meta.get("KeySpec") != KEY_SPECS[scheme]:
            raise SigningFailed("key id already used for another scheme", key_ref=meta.get("Arn"), alias=alias)
        if meta.get("KeyState") not in (None, "Enabled"):
            raise SigningFailed(f"KMS key is {meta.get('KeyState')}", key_ref=meta.get("Arn"), alias=alias)
        key_ref = meta["Arn"]
        return KeyInfo(key_ref=key_ref, public_key=await self._public_key(key_ref, scheme))

    async def sign(self, key_ref: str, scheme: KeyScheme, message: bytes) -> bytes:
        check_message(scheme, message)
        public_key = await self._public_key(key_ref, scheme)
        algorithm, message_type = SIGNING[scheme]
        resp = await self._call("sign", KeyId=key_ref, Message=message, MessageType=message_type, SigningAlgorithm=algorithm)
        return finish_signature(scheme, public_key, message, resp["Signature"])
