"""Google Cloud KMS signer: one asymmetric-sign CryptoKey per custody key.

Keys live in ``projects/<project>/locations/<location>/keyRings/<key_ring>`` (the ring is
created on first use if missing). A custody key id maps deterministically to a CryptoKey id;
``key_ref`` is the name of its version 1 (``.../cryptoKeys/<id>/cryptoKeyVersions/1``).
secp256k1 keys are ``EC_SIGN_SECP256K1_SHA256`` (Cloud KMS offers it only at HSM protection
level) signing the 32-byte digest passed as ``digest.sha256``; Ed25519 keys are
``EC_SIGN_ED25519`` (configured protection level) signing raw ``data``. Requests and answers
carry CRC32C checksums and are checked as Google documents; a mismatch is retryable. Every
signature is verified locally against the key's public key before it is returned.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from typing import Any, ClassVar, NoReturn

from google.api_core import exceptions as gexc
from google.api_core.retry import AsyncRetry, if_exception_type

from core import metrics
from core.errors import SignerUnavailable, SigningFailed
from core.settings import GcpKmsSettings
from signers._kms import check_message, finish_signature, public_key_bytes
from signers.base import KeyInfo, KeyScheme
from signers.crc32c import crc32c

log = logging.getLogger("custody.signers.gcp_kms")

ALGORITHMS: dict[str, str] = {"secp256k1": "EC_SIGN_SECP256K1_SHA256", "ed25519": "EC_SIGN_ED25519"}
FIRST_VERSION = "cryptoKeyVersions/1"
# One short client-side retry window for UNAVAILABLE / DEADLINE_EXCEEDED; Temporal's activity
# retry policy is the real retry loop.
RETRY = AsyncRetry(
    initial=0.1,
    maximum=0.5,
    multiplier=2.0,
    timeout=2.0,
    predicate=if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
)
CALL_TIMEOUT = 15.0
PENDING_GENERATION_WAIT = 10.0  # real Cloud KMS generates asymmetric versions asynchronously

_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def crypto_key_id(key_id: str) -> str:
    """Custody key id -> a Cloud KMS id ([a-zA-Z0-9_-]{1,63}): a readable part + a hash, stable."""
    readable = _ID_CHARS.sub("-", key_id)[:46]
    return f"{readable}-{hashlib.sha256(key_id.encode()).hexdigest()[:16]}"


class GcpKmsSigner:
    backend: ClassVar[str] = "gcp-kms"

    def __init__(self, settings: GcpKmsSettings, client: Any = None) -> None:
        self._settings = settings
        self._client = client  # built on first use, inside the running event loop
        self._owns_client = client is None
        self._public_keys: dict[str, bytes] = {}
        self._ring_ready = False

    @property
    def key_ring_name(self) -> str:
        s = self._settings
        return f"projects/{s.project}/locations/{s.location}/keyRings/{s.key_ring}"

    def _kms(self) -> Any:
        if self._client is None:
            from google.cloud.kms_v1 import KeyManagementServiceAsyncClient

            if self._settings.endpoint:
                import grpc
                from google.cloud.kms_v1.services.key_management_service.transports import (
                    KeyManagementServiceGrpcAsyncIOTransport,
                )

                # A local server: plain gRPC, no credentials (the transport ignores them
                # when given a channel).
                channel = grpc.aio.insecure_channel(self._settings.endpoint)
                self._client = KeyManagementServiceAsyncClient(transport=KeyManagementServiceGrpcAsyncIOTransport(channel=channel))
            else:
                try:  # Application Default Credentials
                    self._client = KeyManagementServiceAsyncClient()
                except Exception as e:  # google.auth DefaultCredentialsError
                    raise SigningFailed(f"Cloud KMS client: {e}", code=type(e).__name__) from e
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.transport.close()
            self._client = None

    # --- plumbing ----------------------------------------------------------------------------
    async def _call(self, method: str, request: dict[str, Any], expected: tuple[type[BaseException], ...] = ()) -> Any:
        """One Cloud KMS call; exceptions of `expected` types pass through untranslated."""
        try:
            return await getattr(self._kms(), method)(request=request, retry=RETRY, timeout=CALL_TIMEOUT)
        except expected:
            raise
        except gexc.RetryError as e:  # the retry window ran out on a retryable error
            self._count(e.cause or e)
            raise SignerUnavailable(f"Cloud KMS {method}: {e.message}", code=_code(e.cause or e)) from e
        except gexc.GoogleAPICallError as e:
            self._raise(method, e)
        except (SigningFailed, SignerUnavailable):
            raise
        except TimeoutError as e:
            self._count(e)
            raise SignerUnavailable(f"Cloud KMS {method}: timed out", code="TIMEOUT") from e
        except Exception as e:
            # grpc / google.auth transport errors (token refresh, connection) are worth a retry.
            import google.auth.exceptions as auth_exc
            import grpc

            if isinstance(e, (grpc.RpcError, auth_exc.TransportError, auth_exc.RefreshError, OSError)):
                self._count(e)
                raise SignerUnavailable(f"Cloud KMS {method}: {e}", code=type(e).__name__) from e
            raise

    def _count(self, e: BaseException) -> None:
        metrics.KMS_ERRORS.labels(backend=self.backend, code=_code(e)).inc()

    def _raise(self, method: str, e: gexc.GoogleAPICallError) -> NoReturn:
        self._count(e)
        code = _code(e)
        transient = isinstance(e, (gexc.ServerError, gexc.TooManyRequests, gexc.DeadlineExceeded, gexc.Aborted)) or (
            isinstance(e, gexc.FailedPrecondition) and "PENDING_GENERATION" in (e.message or "")
        )
        if transient:  # UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, ...
            raise SignerUnavailable(f"Cloud KMS {method}: {e.message}", code=code) from e
        # PERMISSION_DENIED, NOT_FOUND, FAILED_PRECONDITION (disabled/destroyed), INVALID_ARGUMENT, ...
        raise SigningFailed(f"Cloud KMS {method}: {e.message}", code=code) from e

    async def _ensure_key_ring(self) -> None:
        if self._ring_ready:
            return
        s = self._settings
        try:
            await self._call(
                "create_key_ring",
                {"parent": f"projects/{s.project}/locations/{s.location}", "key_ring_id": s.key_ring, "key_ring": {}},
                expected=(gexc.AlreadyExists, gexc.PermissionDenied),
            )
        except gexc.AlreadyExists:
            pass
        except gexc.PermissionDenied:
            # Provisioned outside (e.g. Terraform) for an identity without keyRings.create:
            # if the ring really is missing, CreateCryptoKey says NOT_FOUND.
            log.info("no permission to create key ring %s; assuming it exists", self.key_ring_name)
        self._ring_ready = True

    async def _enabled_version(self, name: str, scheme: KeyScheme) -> None:
        """Wait out PENDING_GENERATION; refuse a version of another algorithm or not ENABLED."""
        from google.cloud.kms_v1 import CryptoKeyVersion

        state_t = CryptoKeyVersion.CryptoKeyVersionState
        deadline = asyncio.get_running_loop().time() + PENDING_GENERATION_WAIT
        while True:
            version = await self._call("get_crypto_key_version", {"name": name})
            if CryptoKeyVersion.CryptoKeyVersionAlgorithm(version.algorithm).name != ALGORITHMS[scheme]:
                raise SigningFailed("key id already used for another scheme", key_ref=name)
            if version.state == state_t.ENABLED:
                return
            if version.state != state_t.PENDING_GENERATION:
                raise SigningFailed(f"Cloud KMS key version is {state_t(version.state).name}", key_ref=name)
            if asyncio.get_running_loop().time() > deadline:
                raise SignerUnavailable("Cloud KMS key version is still being generated", key_ref=name)
            await asyncio.sleep(0.5)

    async def _public_key(self, key_ref: str, scheme: KeyScheme) -> bytes:
        cached = self._public_keys.get(key_ref)
        if cached is not None:
            return cached
        resp = await self._call("get_public_key", {"name": key_ref})
        if resp.name != key_ref or resp.pem_crc32c != crc32c(resp.pem.encode()):
            raise SignerUnavailable("Cloud KMS GetPublicKey answer failed its integrity check", key_ref=key_ref)
        public_key = public_key_bytes(scheme, resp.pem.encode(), pem=True)
        self._public_keys[key_ref] = public_key
        return public_key

    # --- Signer ------------------------------------------------------------------------------
    async def create_key(self, key_id: str, scheme: KeyScheme) -> KeyInfo:
        if scheme not in ALGORITHMS:
            raise SigningFailed(f"unsupported key scheme {scheme!r}")
        await self._ensure_key_ring()
        protection = "HSM" if scheme == "secp256k1" else self._settings.protection_level
        kms_id = crypto_key_id(key_id)
        key_name = f"{self.key_ring_name}/cryptoKeys/{kms_id}"
        try:
            await self._call(
                "create_crypto_key",
                {
                    "parent": self.key_ring_name,
                    "crypto_key_id": kms_id,
                    "crypto_key": {
                        "purpose": "ASYMMETRIC_SIGN",
                        "version_template": {"algorithm": ALGORITHMS[scheme], "protection_level": protection},
                        "labels": {"managed-by": "custody"},
                    },
                },
                expected=(gexc.AlreadyExists,),
            )
        except gexc.AlreadyExists:
            pass  # made by an earlier attempt for the same key id: use it
        key_ref = f"{key_name}/{FIRST_VERSION}"
        await self._enabled_version(key_ref, scheme)
        return KeyInfo(key_ref=key_ref, public_key=await self._public_key(key_ref, scheme))

    async def sign(self, key_ref: str, scheme: KeyScheme, message: bytes) -> bytes:
        check_message(scheme, message)
        public_key = await self._public_key(key_ref, scheme)
        checksum = crc32c(message)
        if scheme == "secp256k1":
            request = {"name": key_ref, "digest": {"sha256": message}, "digest_crc32c": checksum}
        else:
            request = {"name": key_ref, "data": message, "data_crc32c": checksum}
        resp = await self._call("asymmetric_sign", request)
        verified = resp.verified_digest_crc32c if scheme == "secp256k1" else resp.verified_data_crc32c
        if not verified or resp.name != key_ref or resp.signature_crc32c != crc32c(resp.signature):
            # Corrupted in transit (either way): Google's guidance is to retry.
            raise SignerUnavailable("Cloud KMS AsymmetricSign answer failed its integrity check", key_ref=key_ref)
        return finish_signature(scheme, public_key, message, resp.signature)


def _code(e: BaseException) -> str:
    status = getattr(e, "grpc_status_code", None)
    return status.name if status is not None else type(e).__name__
