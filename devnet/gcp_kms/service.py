"""In-memory Cloud KMS (KeyManagementService subset) with real keys and signatures.

Asymmetric signing keys (EC P-256/P-384/secp256k1/Ed25519) and symmetric ENCRYPT_DECRYPT keys
(``GOOGLE_SYMMETRIC_ENCRYPTION``: AES-256-GCM with additional authenticated data, a primary
version for Encrypt, the version found from the ciphertext for Decrypt).

Pure logic: every method takes/returns the proto-plus types from ``google.cloud.kms_v1``
and raises :class:`KmsError` (a gRPC status code + message) like the real service.
The gRPC wiring lives in :mod:`devnet.gcp_kms.server`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1

from signers.crc32c import crc32c

Algorithm = kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm
State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
Purpose = kms_v1.CryptoKey.CryptoKeyPurpose
ProtectionLevel = kms_v1.ProtectionLevel
PublicKeyFormat = kms_v1.PublicKey.PublicKeyFormat

_ID_RE = re.compile(r"^[a-zA-Z0-9_-]{1,63}$")
_LOCATION_RE = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
_KEY_RING_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+)/keyRings/([^/]+)$")
_CRYPTO_KEY_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+)/cryptoKeys/([^/]+)$")
_VERSION_RE = re.compile(r"^(projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+)/cryptoKeyVersions/([0-9]+)$")

DEFAULT_DESTROY_SCHEDULED_DURATION = dt.timedelta(days=30)

# Supported signing algorithms: curve (None = Ed25519), digest field, digest size,
# protection levels Cloud KMS offers for it.
_EC_ALGORITHMS: dict[int, tuple[Any, str | None, int, set[int]]] = {
    Algorithm.EC_SIGN_P256_SHA256: (ec.SECP256R1, "sha256", 32, {ProtectionLevel.SOFTWARE, ProtectionLevel.HSM}),
    Algorithm.EC_SIGN_P384_SHA384: (ec.SECP384R1, "sha384", 48, {ProtectionLevel.SOFTWARE, ProtectionLevel.HSM}),
    # Cloud KMS offers secp256k1 only at HSM protection level.
    Algorithm.EC_SIGN_SECP256K1_SHA256: (ec.SECP256K1, "sha256", 32, {ProtectionLevel.HSM}),
    Algorithm.EC_SIGN_ED25519: (None, None, 0, {ProtectionLevel.SOFTWARE, ProtectionLevel.HSM}),
}
_HASHES = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
SYMMETRIC = Algorithm.GOOGLE_SYMMETRIC_ENCRYPTION
MAX_CRYPTO_BYTES = 64 * 1024  # plaintext, AAD and ciphertext limits of Encrypt/Decrypt
# Devnet ciphertext: version number, AES-GCM nonce, then ciphertext||tag. (Real Cloud KMS
# ciphertexts are opaque too; the version is recoverable from them.)
_CIPHERTEXT_HEADER = struct.Struct(">I12s")
_INVALID_CIPHERTEXT = "Decryption failed: the ciphertext is invalid."


class KmsError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _invalid(msg: str) -> KmsError:
    return KmsError(grpc.StatusCode.INVALID_ARGUMENT, msg)


def _not_found(kind: str, name: str) -> KmsError:
    return KmsError(grpc.StatusCode.NOT_FOUND, f"{kind} {name} not found.")


@dataclass
class _Version:
    name: str
    algorithm: int
    protection_level: int
    private_key: Any
    state: int = State.ENABLED
    create_time: dt.datetime = field(default_factory=_now)
    generate_time: dt.datetime = field(default_factory=_now)
    destroy_time: dt.datetime | None = None
    destroy_event_time: dt.datetime | None = None

    def to_proto(self) -> kms_v1.CryptoKeyVersion:
        v = kms_v1.CryptoKeyVersion(
            name=self.name,
            state=self.state,
            protection_level=self.protection_level,
            algorithm=self.algorithm,
            create_time=self.create_time,
            generate_time=self.generate_time,
        )
        if self.destroy_time is not None:
            v.destroy_time = self.destroy_time
        if self.destroy_event_time is not None:
            v.destroy_event_time = self.destroy_event_time
        return v


@dataclass
class _CryptoKey:
    name: str
    purpose: int
    algorithm: int
    protection_level: int
    create_time: dt.datetime
    labels: dict[str, str]
    destroy_scheduled_duration: dt.timedelta
    import_only: bool = False
    versions: dict[int, _Version] = field(default_factory=dict)
    next_version: int = 1
    primary: int | None = None  # ENCRYPT_DECRYPT keys: the version Encrypt uses

    def to_proto(self) -> kms_v1.CryptoKey:
        key = kms_v1.CryptoKey(
            name=self.name,
            purpose=self.purpose,
            create_time=self.create_time,
            version_template=kms_v1.CryptoKeyVersionTemplate(protection_level=self.protection_level, algorithm=self.algorithm),
            labels=self.labels,
            import_only=self.import_only,
            destroy_scheduled_duration=self.destroy_scheduled_duration,
        )
        if self.primary is not None:
            key.primary = self.versions[self.primary].to_proto()
        return key


@dataclass
class _KeyRing:
    name: str
    create_time: dt.datetime
    keys: dict[str, _CryptoKey] = field(default_factory=dict)

    def to_proto(self) -> kms_v1.KeyRing:
        return kms_v1.KeyRing(name=self.name, create_time=self.create_time)


def _generate_private_key(algorithm: int) -> Any:
    if algorithm == SYMMETRIC:
        return AESGCM.generate_key(bit_length=256)
    curve = _EC_ALGORITHMS[algorithm][0]
    if curve is None:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(curve())


def _page(items: list[Any], page_size: int, page_token: str) -> tuple[list[Any], str]:
    try:
        start = int(page_token) if page_token else 0
    except ValueError:
        raise _invalid(f"Invalid page token {page_token!r}.") from None
    if page_size < 0:
        raise _invalid("page_size must be non-negative.")
    end = len(items) if page_size == 0 else start + min(page_size, 1000)
    next_token = str(end) if end < len(items) else ""
    return items[start:end], next_token


class KmsState:
    """All key rings, keys and versions of one devnet instance."""

    def __init__(self) -> None:
        self.key_rings: dict[str, _KeyRing] = {}

    def reset(self) -> None:
        self.key_rings.clear()

    # ----------------------------------------------------------------- lookups
    def _key_ring(self, name: str) -> _KeyRing:
        if not _KEY_RING_RE.match(name):
            raise _invalid(f"Resource name [{name}] does not match the KeyRing pattern.")
        kr = self.key_rings.get(name)
        if kr is None:
            raise _not_found("KeyRing", name)
        return kr

    def _crypto_key(self, name: str) -> _CryptoKey:
        m = _CRYPTO_KEY_RE.match(name)
        if not m:
            raise _invalid(f"Resource name [{name}] does not match the CryptoKey pattern.")
        kr = self.key_rings.get(m.group(1))
        key = kr.keys.get(m.group(2)) if kr else None
        if key is None:
            raise _not_found("CryptoKey", name)
        return key

    def _version(self, name: str) -> tuple[_CryptoKey, _Version]:
        m = _VERSION_RE.match(name)
        if not m:
            raise _invalid(f"Resource name [{name}] does not match the CryptoKeyVersion pattern.")
        try:
            key = self._crypto_key(m.group(1))
        except KmsError:
            raise _not_found("CryptoKeyVersion", name) from None
        version = key.versions.get(int(m.group(2)))
        if version is None:
            raise _not_found("CryptoKeyVersion", name)
        return key, version

    @staticmethod
    def _require_enabled(version: _Version) -> None:
        if version.state != State.ENABLED:
            raise KmsError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{version.name} is not enabled, current state is: {State(version.state).name}.",
            )

    # ---------------------------------------------------------------- key rings
    def create_key_ring(self, req: kms_v1.CreateKeyRingRequest) -> kms_v1.KeyRing:
        if not _LOCATION_RE.match(req.parent):
            raise _invalid(f"Resource name [{req.parent}] does not match the Location pattern.")
        if not _ID_RE.match(req.key_ring_id):
            raise _invalid(f"key_ring_id [{req.key_ring_id}] must match [a-zA-Z0-9_-]{{1,63}}.")
        name = f"{req.parent}/keyRings/{req.key_ring_id}"
        if name in self.key_rings:
            raise KmsError(grpc.StatusCode.ALREADY_EXISTS, f"KeyRing {name} already exists.")
        kr = _KeyRing(name=name, create_time=_now())
        self.key_rings[name] = kr
        return kr.to_proto()

    def get_key_ring(self, req: kms_v1.GetKeyRingRequest) -> kms_v1.KeyRing:
        return self._key_ring(req.name).to_proto()

    def list_key_rings(self, req: kms_v1.ListKeyRingsRequest) -> kms_v1.ListKeyRingsResponse:
        if not _LOCATION_RE.match(req.parent):
            raise _invalid(f"Resource name [{req.parent}] does not match the Location pattern.")
        items = sorted(n for n in self.key_rings if n.startswith(req.parent + "/keyRings/"))
        page, token = _page(items, req.page_size, req.page_token)
        return kms_v1.ListKeyRingsResponse(
            key_rings=[self.key_rings[n].to_proto() for n in page],
            next_page_token=token,
            total_size=len(items),
        )

    # -------------------------------------------------------------- crypto keys
    def create_crypto_key(self, req: kms_v1.CreateCryptoKeyRequest) -> kms_v1.CryptoKey:
        kr = self._key_ring(req.parent)
        if not _ID_RE.match(req.crypto_key_id):
            raise _invalid(f"crypto_key_id [{req.crypto_key_id}] must match [a-zA-Z0-9_-]{{1,63}}.")
        ck = req.crypto_key
        if ck.purpose == Purpose.CRYPTO_KEY_PURPOSE_UNSPECIFIED:
            raise _invalid("The purpose of the CryptoKey must be specified.")
        if ck.purpose not in (Purpose.ASYMMETRIC_SIGN, Purpose.ENCRYPT_DECRYPT):
            raise KmsError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"The devnet supports purposes ASYMMETRIC_SIGN and ENCRYPT_DECRYPT only, not {Purpose(ck.purpose).name}.",
            )
        algorithm = ck.version_template.algorithm
        protection = ck.version_template.protection_level or ProtectionLevel.SOFTWARE
        if ck.purpose == Purpose.ENCRYPT_DECRYPT:
            algorithm = algorithm or SYMMETRIC
            if algorithm != SYMMETRIC:
                raise _invalid(
                    f"Algorithm {Algorithm(algorithm).name} is not valid for purpose ENCRYPT_DECRYPT "
                    "(the devnet supports GOOGLE_SYMMETRIC_ENCRYPTION)."
                )
            if protection not in (ProtectionLevel.SOFTWARE, ProtectionLevel.HSM):
                raise _invalid(f"Protection level {ProtectionLevel(protection).name} is not supported.")
        else:
            if algorithm not in _EC_ALGORITHMS:
                raise _invalid(
                    f"Algorithm {Algorithm(algorithm).name} is not a supported signing algorithm "
                    f"(devnet supports {sorted(Algorithm(a).name for a in _EC_ALGORITHMS)})."
                )
            if protection not in _EC_ALGORITHMS[algorithm][3]:
                raise _invalid(f"Algorithm {Algorithm(algorithm).name} is not supported at protection level {ProtectionLevel(protection).name}.")
            if "rotation_period" in ck or "next_rotation_time" in ck:
                raise _invalid("Automatic rotation is not supported for asymmetric keys.")
        name = f"{kr.name}/cryptoKeys/{req.crypto_key_id}"
        if req.crypto_key_id in kr.keys:
            raise KmsError(grpc.StatusCode.ALREADY_EXISTS, f"CryptoKey {name} already exists.")
        key = _CryptoKey(
            name=name,
            purpose=ck.purpose,
            algorithm=algorithm,
            protection_level=protection,
            create_time=_now(),
            labels=dict(ck.labels),
            destroy_scheduled_duration=(ck.destroy_scheduled_duration if "destroy_scheduled_duration" in ck else DEFAULT_DESTROY_SCHEDULED_DURATION),
            import_only=ck.import_only,
        )
        if not req.skip_initial_version_creation and not ck.import_only:
            version = self._new_version(key)
            if key.purpose == Purpose.ENCRYPT_DECRYPT:
                key.primary = int(version.name.rsplit("/", 1)[1])
        kr.keys[req.crypto_key_id] = key
        return key.to_proto()

    def get_crypto_key(self, req: kms_v1.GetCryptoKeyRequest) -> kms_v1.CryptoKey:
        return self._crypto_key(req.name).to_proto()

    def update_crypto_key_primary_version(self, req: kms_v1.UpdateCryptoKeyPrimaryVersionRequest) -> kms_v1.CryptoKey:
        key = self._crypto_key(req.name)
        if key.purpose != Purpose.ENCRYPT_DECRYPT:
            raise KmsError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"CryptoKey {key.name} has purpose {Purpose(key.purpose).name}; only ENCRYPT_DECRYPT keys have a primary version.",
            )
        try:
            number = int(req.crypto_key_version_id)
        except ValueError:
            raise _invalid(f"crypto_key_version_id [{req.crypto_key_version_id}] is not a version id.") from None
        version = key.versions.get(number)
        if version is None:
            raise _not_found("CryptoKeyVersion", f"{key.name}/cryptoKeyVersions/{number}")
        self._require_enabled(version)
        key.primary = number
        return key.to_proto()

    def list_crypto_keys(self, req: kms_v1.ListCryptoKeysRequest) -> kms_v1.ListCryptoKeysResponse:
        kr = self._key_ring(req.parent)
        items = sorted(kr.keys)
        page, token = _page(items, req.page_size, req.page_token)
        return kms_v1.ListCryptoKeysResponse(
            crypto_keys=[kr.keys[k].to_proto() for k in page],
            next_page_token=token,
            total_size=len(items),
        )

    # ---------------------------------------------------------------- versions
    def _new_version(self, key: _CryptoKey) -> _Version:
        n = key.next_version
        key.next_version += 1
        version = _Version(
            name=f"{key.name}/cryptoKeyVersions/{n}",
            algorithm=key.algorithm,
            protection_level=key.protection_level,
            private_key=_generate_private_key(key.algorithm),
        )
        key.versions[n] = version
        return version

    def create_crypto_key_version(self, req: kms_v1.CreateCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        key = self._crypto_key(req.parent)
        if key.import_only:
            raise KmsError(grpc.StatusCode.FAILED_PRECONDITION, f"CryptoKey {key.name} is import-only.")
        return self._new_version(key).to_proto()

    def get_crypto_key_version(self, req: kms_v1.GetCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        return self._version(req.name)[1].to_proto()

    def list_crypto_key_versions(self, req: kms_v1.ListCryptoKeyVersionsRequest) -> kms_v1.ListCryptoKeyVersionsResponse:
        key = self._crypto_key(req.parent)
        items = sorted(key.versions)
        page, token = _page(items, req.page_size, req.page_token)
        return kms_v1.ListCryptoKeyVersionsResponse(
            crypto_key_versions=[key.versions[n].to_proto() for n in page],
            next_page_token=token,
            total_size=len(items),
        )

    def update_crypto_key_version(self, req: kms_v1.UpdateCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        _, version = self._version(req.crypto_key_version.name)
        paths = list(req.update_mask.paths) if "update_mask" in req else []
        if not paths:
            raise _invalid("update_mask must be specified.")
        for path in paths:
            if path != "state":
                raise _invalid(f"Field {path} cannot be updated (devnet supports 'state').")
        new_state = req.crypto_key_version.state
        if new_state not in (State.ENABLED, State.DISABLED):
            raise _invalid(f"Cannot update state to {State(new_state).name}; use ENABLED or DISABLED.")
        if version.state not in (State.ENABLED, State.DISABLED):
            raise KmsError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{version.name} is in state {State(version.state).name} and cannot be updated.",
            )
        version.state = new_state
        return version.to_proto()

    def destroy_crypto_key_version(self, req: kms_v1.DestroyCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        key, version = self._version(req.name)
        if version.state not in (State.ENABLED, State.DISABLED):
            raise KmsError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{version.name} is in state {State(version.state).name} and cannot be destroyed.",
            )
        version.state = State.DESTROY_SCHEDULED
        version.destroy_time = _now() + key.destroy_scheduled_duration
        return version.to_proto()

    def restore_crypto_key_version(self, req: kms_v1.RestoreCryptoKeyVersionRequest) -> kms_v1.CryptoKeyVersion:
        _, version = self._version(req.name)
        if version.state != State.DESTROY_SCHEDULED:
            raise KmsError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{version.name} is not scheduled for destruction, current state is: {State(version.state).name}.",
            )
        version.state = State.DISABLED
        version.destroy_time = None
        return version.to_proto()

    # ----------------------------------------------------------- crypto ops
    @staticmethod
    def _require_purpose(key: _CryptoKey, purpose: int, method: str) -> None:
        if key.purpose != purpose:
            raise KmsError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{method} requires a CryptoKey of purpose {Purpose(purpose).name}; {key.name} has purpose {Purpose(key.purpose).name}.",
            )

    def get_public_key(self, req: kms_v1.GetPublicKeyRequest) -> kms_v1.PublicKey:
        key, version = self._version(req.name)
        self._require_purpose(key, Purpose.ASYMMETRIC_SIGN, "GetPublicKey")
        self._require_enabled(version)
        pub = version.private_key.public_key()
        pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        out = kms_v1.PublicKey(
            name=version.name,
            algorithm=version.algorithm,
            protection_level=version.protection_level,
        )
        fmt = req.public_key_format
        if fmt == PublicKeyFormat.PUBLIC_KEY_FORMAT_UNSPECIFIED:
            out.pem = pem
            out.pem_crc32c = crc32c(pem)
        elif fmt in (PublicKeyFormat.PEM, PublicKeyFormat.DER):
            data = (
                pem.encode()
                if fmt == PublicKeyFormat.PEM
                else pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
            out.public_key_format = fmt
            out.public_key = kms_v1.ChecksummedData(data=data, crc32c_checksum=crc32c(data))
        else:
            raise _invalid(f"Public key format {PublicKeyFormat(fmt).name} is not supported for this algorithm.")
        return out

    def asymmetric_sign(self, req: kms_v1.AsymmetricSignRequest) -> kms_v1.AsymmetricSignResponse:
        key, version = self._version(req.name)
        self._require_purpose(key, Purpose.ASYMMETRIC_SIGN, "AsymmetricSign")
        has_digest = "digest" in req
        has_data = bool(req.data)
        if has_digest and has_data:
            raise _invalid("Only one of digest and data may be specified.")

        digest_kind = kms_v1.Digest.pb(req.digest).WhichOneof("digest") if has_digest else None
        digest_bytes = getattr(req.digest, digest_kind) if digest_kind else b""
        verified_digest = verified_data = False
        if "digest_crc32c" in req:
            if crc32c(digest_bytes) != req.digest_crc32c:
                raise _invalid("The checksum in field digest_crc32c did not match the data in field digest.")
            verified_digest = True
        if "data_crc32c" in req:
            if crc32c(req.data) != req.data_crc32c:
                raise _invalid("The checksum in field data_crc32c did not match the data in field data.")
            verified_data = True

        self._require_enabled(version)
        curve, want_digest, digest_size, _ = _EC_ALGORITHMS[version.algorithm]
        alg_name = Algorithm(version.algorithm).name
        if curve is None:  # EC_SIGN_ED25519: pure EdDSA over the data
            if has_digest:
                raise _invalid(f"Algorithm {alg_name} signs data, not a digest; set field data.")
            if not has_data:
                raise _invalid("The data field is required for algorithm EC_SIGN_ED25519.")
            if len(req.data) > 64 * 1024:
                raise _invalid("The data field must be at most 65536 bytes.")
            signature = version.private_key.sign(req.data)  # 64 bytes, RFC 8032
        else:
            if has_data:
                raise _invalid(f"Algorithm {alg_name} requires field digest, not data.")
            if digest_kind != want_digest:
                raise _invalid(f"The digest type {digest_kind or 'none'} does not match the algorithm {alg_name}, which requires {want_digest}.")
            if len(digest_bytes) != digest_size:
                raise _invalid(f"The {want_digest} digest must be {digest_size} bytes, got {len(digest_bytes)}.")
            hash_alg = _HASHES[want_digest]()
            signature = version.private_key.sign(digest_bytes, ec.ECDSA(Prehashed(hash_alg)))  # DER
        return kms_v1.AsymmetricSignResponse(
            signature=signature,
            signature_crc32c=crc32c(signature),
            verified_digest_crc32c=verified_digest,
            verified_data_crc32c=verified_data,
            name=version.name,
            protection_level=version.protection_level,
        )

    @staticmethod
    def _check_crc32c(req: Any, data_field: str, checksum_field: str) -> bool:
        """Google's integrity rule: a checksum sent with the request must match its data."""
        if checksum_field not in req:
            return False
        if crc32c(getattr(req, data_field)) != getattr(req, checksum_field):
            raise _invalid(f"The checksum in field {checksum_field} did not match the data in field {data_field}.")
        return True

    @staticmethod
    def _gcm_aad(key: _CryptoKey, aad: bytes) -> bytes:
        # Bound to the CryptoKey, so a ciphertext of another key never decrypts here.
        return key.name.encode() + b"\x00" + aad

    def encrypt(self, req: kms_v1.EncryptRequest) -> kms_v1.EncryptResponse:
        if _VERSION_RE.match(req.name):
            key, version = self._version(req.name)
        else:
            key = self._crypto_key(req.name)
            version = key.versions.get(key.primary) if key.primary is not None else None
            if version is None and key.purpose == Purpose.ENCRYPT_DECRYPT:
                raise KmsError(grpc.StatusCode.FAILED_PRECONDITION, f"CryptoKey {key.name} has no primary version.")
        self._require_purpose(key, Purpose.ENCRYPT_DECRYPT, "Encrypt")
        assert version is not None
        if not req.plaintext:
            raise _invalid("The plaintext field is required.")
        if len(req.plaintext) > MAX_CRYPTO_BYTES:
            raise _invalid(f"The plaintext field must be at most {MAX_CRYPTO_BYTES} bytes.")
        if len(req.additional_authenticated_data) > MAX_CRYPTO_BYTES:
            raise _invalid(f"The additional_authenticated_data field must be at most {MAX_CRYPTO_BYTES} bytes.")
        verified_plaintext = self._check_crc32c(req, "plaintext", "plaintext_crc32c")
        verified_aad = self._check_crc32c(req, "additional_authenticated_data", "additional_authenticated_data_crc32c")
        self._require_enabled(version)
        number = int(version.name.rsplit("/", 1)[1])
        nonce = os.urandom(12)
        sealed = AESGCM(version.private_key).encrypt(nonce, req.plaintext, self._gcm_aad(key, req.additional_authenticated_data))
        ciphertext = _CIPHERTEXT_HEADER.pack(number, nonce) + sealed
        return kms_v1.EncryptResponse(
            name=version.name,
            ciphertext=ciphertext,
            ciphertext_crc32c=crc32c(ciphertext),
            verified_plaintext_crc32c=verified_plaintext,
            verified_additional_authenticated_data_crc32c=verified_aad,
            protection_level=version.protection_level,
        )

    def decrypt(self, req: kms_v1.DecryptRequest) -> kms_v1.DecryptResponse:
        key = self._crypto_key(req.name)  # a CryptoKey, not a version: the ciphertext names it
        self._require_purpose(key, Purpose.ENCRYPT_DECRYPT, "Decrypt")
        if not req.ciphertext:
            raise _invalid("The ciphertext field is required.")
        if len(req.ciphertext) > MAX_CRYPTO_BYTES + _CIPHERTEXT_HEADER.size + 16:
            raise _invalid("The ciphertext field is too long.")
        self._check_crc32c(req, "ciphertext", "ciphertext_crc32c")
        self._check_crc32c(req, "additional_authenticated_data", "additional_authenticated_data_crc32c")
        if len(req.ciphertext) < _CIPHERTEXT_HEADER.size + 16:
            raise _invalid(_INVALID_CIPHERTEXT)
        number, nonce = _CIPHERTEXT_HEADER.unpack_from(req.ciphertext)
        version = key.versions.get(number)
        if version is None:
            raise _invalid(_INVALID_CIPHERTEXT)
        self._require_enabled(version)
        try:
            plaintext = AESGCM(version.private_key).decrypt(
                nonce,
                req.ciphertext[_CIPHERTEXT_HEADER.size :],
                self._gcm_aad(key, req.additional_authenticated_data),
            )
        except Exception:  # InvalidTag: another key's ciphertext, tampered, or other AAD
            raise _invalid(_INVALID_CIPHERTEXT) from None
        return kms_v1.DecryptResponse(
            plaintext=plaintext,
            plaintext_crc32c=crc32c(plaintext),
            used_primary=number == key.primary,
            protection_level=version.protection_level,
        )


# Methods served, with (request type, response type).
METHODS: dict[str, tuple[Any, Any, str]] = {
    "CreateKeyRing": (kms_v1.CreateKeyRingRequest, kms_v1.KeyRing, "create_key_ring"),
    "GetKeyRing": (kms_v1.GetKeyRingRequest, kms_v1.KeyRing, "get_key_ring"),
    "ListKeyRings": (kms_v1.ListKeyRingsRequest, kms_v1.ListKeyRingsResponse, "list_key_rings"),
    "CreateCryptoKey": (kms_v1.CreateCryptoKeyRequest, kms_v1.CryptoKey, "create_crypto_key"),
    "GetCryptoKey": (kms_v1.GetCryptoKeyRequest, kms_v1.CryptoKey, "get_crypto_key"),
    "UpdateCryptoKeyPrimaryVersion": (
        kms_v1.UpdateCryptoKeyPrimaryVersionRequest,
        kms_v1.CryptoKey,
        "update_crypto_key_primary_version",
    ),
    "ListCryptoKeys": (kms_v1.ListCryptoKeysRequest, kms_v1.ListCryptoKeysResponse, "list_crypto_keys"),
    "CreateCryptoKeyVersion": (
        kms_v1.CreateCryptoKeyVersionRequest,
        kms_v1.CryptoKeyVersion,
        "create_crypto_key_version",
    ),
    "GetCryptoKeyVersion": (kms_v1.GetCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion, "get_crypto_key_version"),
    "ListCryptoKeyVersions": (
        kms_v1.ListCryptoKeyVersionsRequest,
        kms_v1.ListCryptoKeyVersionsResponse,
        "list_crypto_key_versions",
    ),
    "UpdateCryptoKeyVersion": (
        kms_v1.UpdateCryptoKeyVersionRequest,
        kms_v1.CryptoKeyVersion,
        "update_crypto_key_version",
    ),
    "DestroyCryptoKeyVersion": (
        kms_v1.DestroyCryptoKeyVersionRequest,
        kms_v1.CryptoKeyVersion,
        "destroy_crypto_key_version",
    ),
    "RestoreCryptoKeyVersion": (
        kms_v1.RestoreCryptoKeyVersionRequest,
        kms_v1.CryptoKeyVersion,
        "restore_crypto_key_version",
    ),
    "GetPublicKey": (kms_v1.GetPublicKeyRequest, kms_v1.PublicKey, "get_public_key"),
    "AsymmetricSign": (kms_v1.AsymmetricSignRequest, kms_v1.AsymmetricSignResponse, "asymmetric_sign"),
    "Encrypt": (kms_v1.EncryptRequest, kms_v1.EncryptResponse, "encrypt"),
    "Decrypt": (kms_v1.DecryptRequest, kms_v1.DecryptResponse, "decrypt"),
}

SERVICE_NAME = "google.cloud.kms.v1.KeyManagementService"

__all__ = ["KmsError", "KmsState", "METHODS", "SERVICE_NAME"]
