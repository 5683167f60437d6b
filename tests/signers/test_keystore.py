"""The local keystore against real PostgreSQL: envelope encryption, idempotent creation,
verified signatures, and nothing usable without the key-encryption key (KEK) — whether the KEK
is 32 bytes in memory or a key in AWS KMS / Cloud KMS (local servers, real client libraries)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import coincurve
import pytest
import pytest_asyncio
from botocore.config import Config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1
from pydantic import ValidationError

import signers.local
from core.errors import SignerUnavailable, SigningFailed
from core.settings import DEV_KEYSTORE_KEK, AwsKmsSettings, GcpKmsSettings, Settings
from models.db import KeystoreKey
from signers.kek import AwsKmsKek, GcpKmsKek, LocalAesGcmKek, kek_from_settings
from signers.local import LocalKeystoreSigner
from signers.registry import signer_for_backend

KEK = os.urandom(32)
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})
State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState


def local_kek(kek: bytes = KEK, kek_id: str = "kek-test") -> LocalAesGcmKek:
    return LocalAesGcmKek(kek, kek_id)


async def _row(sessions, key_id: str) -> KeystoreKey:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        row = await session.get(KeystoreKey, key_id)
    assert row is not None
    return row


# ------------------------------------------------------------------ local AES-GCM KEK


async def test_keys_are_created_once_and_sign_verifiably(sessions):
    signer = LocalKeystoreSigner(sessions, local_kek())
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
    signer = LocalKeystoreSigner(sessions, local_kek())
    key_id = f"k-{uuid.uuid4()}"
    await signer.create_key(key_id, "secp256k1")
    row = await _row(sessions, key_id)
    assert len(row.ciphertext) == 32 + 16  # secret + GCM tag, no plaintext
    stranger = LocalKeystoreSigner(sessions, local_kek(os.urandom(32), "other"))
    with pytest.raises(SigningFailed, match="cannot be decrypted"):
        await stranger.sign(key_id, "secp256k1", os.urandom(32))


async def test_a_ciphertext_moved_to_another_key_id_does_not_decrypt(sessions):
    signer = LocalKeystoreSigner(sessions, local_kek())
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


async def test_local_kek_rows_keep_the_layout_existing_rows_have(sessions):
    """Rows sealed before KEKs became pluggable still open, and new rows are what older code
    reads: dek_nonce = the 12-byte nonce, wrapped_dek = AES-GCM(KEK) of the data key."""
    kek_id = f"kek-{uuid.uuid4().hex[:6]}"
    # A row exactly as the previous LocalKeystoreSigner._seal wrote it.
    old_id = f"old-{uuid.uuid4()}"
    secret = Ed25519PrivateKey.generate()
    public = secret.public_key().public_bytes_raw()
    dek, nonce, dek_nonce, aad = AESGCM.generate_key(bit_length=256), os.urandom(12), os.urandom(12), old_id.encode()
    async with sessions() as session, session.begin():
        session.add(
            KeystoreKey(
                key_id=old_id,
                scheme="ed25519",
                public_key=public.hex(),
                kek_id=kek_id,
                ciphertext=AESGCM(dek).encrypt(nonce, secret.private_bytes_raw(), aad),
                nonce=nonce,
                wrapped_dek=AESGCM(KEK).encrypt(dek_nonce, dek, aad),
                dek_nonce=dek_nonce,
            )
        )
    signer = LocalKeystoreSigner(sessions, local_kek(kek_id=kek_id))
    Ed25519PublicKey.from_public_bytes(public).verify(await signer.sign(old_id, "ed25519", b"old row"), b"old row")

    # ... and a new row opens the old way.
    info = await signer.create_key(f"new-{uuid.uuid4()}", "secp256k1")
    row = await _row(sessions, info.key_ref)
    assert row.kek_id == kek_id and len(row.dek_nonce) == 12 and len(row.wrapped_dek) == 32 + 16
    new_aad = row.key_id.encode()
    new_dek = AESGCM(KEK).decrypt(row.dek_nonce, row.wrapped_dek, new_aad)
    key = coincurve.PrivateKey(AESGCM(new_dek).decrypt(row.nonce, row.ciphertext, new_aad))
    assert key.public_key.format(compressed=False) == info.public_key


# ------------------------------------------------------------------ KMS KEKs


@dataclass
class KmsKek:
    """One KMS behind a KEK: settings naming a fresh KEK key, and admin levers around it."""

    name: str
    new_settings: Callable[[], Awaitable[Settings]]  # a fresh KEK key per call
    disable: Callable[[Settings], Awaitable[None]]
    outage: Callable[[], Awaitable[None]]  # Decrypt unavailable, long enough to beat client retries
    clear: Callable[[], Awaitable[None]]
    disabled_codes: tuple[str, ...]


@pytest.fixture(scope="module")
def aws_kek(aws_server) -> KmsKek:  # type: ignore[no-untyped-def]
    admin = aws_server.client("kms", config=NO_RETRY)

    async def new_settings() -> Settings:
        key = admin.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]
        alias = f"alias/custody-kek-{uuid.uuid4().hex[:8]}"
        admin.create_alias(AliasName=alias, TargetKeyId=key["KeyId"])
        return Settings(
            environment="test",
            keystore_kek=f"aws-kms:{alias}",
            keystore_kek_id=f"aws-{key['KeyId']}",
            aws_kms=AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url),
        )

    async def disable(settings: Settings) -> None:
        alias = settings.keystore_kek.get_secret_value().removeprefix("aws-kms:")
        admin.disable_key(KeyId=admin.describe_key(KeyId=alias)["KeyMetadata"]["Arn"])  # DisableKey takes no alias

    async def outage() -> None:  # botocore makes 2 attempts
        aws_server.set_faults({"Decrypt": {"error": "ServiceUnavailableException", "count": 2}})

    async def clear() -> None:
        aws_server.clear_faults()

    return KmsKek("aws", new_settings, disable, outage, clear, ("DisabledException",))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gcp_kek(gcp_server):  # type: ignore[no-untyped-def]
    srv = gcp_server  # the session's (tests/conftest.py)
    admin = srv.async_client()
    ring = await admin.create_key_ring(request={"parent": "projects/custody-test/locations/global", "key_ring_id": "kek-ring", "key_ring": {}})

    async def new_settings() -> Settings:
        key = await admin.create_crypto_key(
            request={
                "parent": ring.name,
                "crypto_key_id": f"kek-{uuid.uuid4().hex[:8]}",
                "crypto_key": {"purpose": kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT},
            }
        )
        return Settings(
            environment="test",
            keystore_kek=f"gcp-kms:{key.name}",
            keystore_kek_id="gcp-" + key.name.rsplit("/", 1)[1],
            gcp_kms=GcpKmsSettings(endpoint=srv.address),
        )

    async def disable(settings: Settings) -> None:
        name = settings.keystore_kek.get_secret_value().removeprefix("gcp-kms:") + "/cryptoKeyVersions/1"
        await admin.update_crypto_key_version(
            request={"crypto_key_version": {"name": name, "state": State.DISABLED}, "update_mask": {"paths": ["state"]}}
        )

    async def outage() -> None:  # UNAVAILABLE: the client retries for its 2 s window, then gives up
        srv.set_faults({"Decrypt": {"code": "UNAVAILABLE", "count": 10_000}})

    async def clear() -> None:
        srv.clear_faults()

    yield KmsKek("gcp", new_settings, disable, outage, clear, ("FAILED_PRECONDITION",))
    await admin.transport.close()
    srv.clear_faults()  # the server is the session's: hand it on without faults


@pytest.fixture(params=["aws", "gcp"])
def kms_kek(request) -> KmsKek:  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"{request.param}_kek")


async def test_keys_sealed_under_a_kms_kek_sign_and_nothing_is_plaintext_at_rest(kms_kek, sessions, monkeypatch):
    settings = await kms_kek.new_settings()
    with pytest.raises(ValueError, match="names a KMS key"):
        settings.keystore_kek_bytes  # noqa: B018 - there are no KEK bytes anywhere
    signer = signer_for_backend("local", settings, sessions)
    assert isinstance(signer, LocalKeystoreSigner)
    kek = signer._kek
    assert isinstance(kek, AwsKmsKek if kms_kek.name == "aws" else GcpKmsKek)

    # Record what must never reach the database: private keys and data keys.
    secrets: list[bytes] = []
    deks: list[bytes] = []
    generate = signers.local._generate

    def recording_generate(scheme: Any) -> tuple[bytes, bytes]:
        secret, public = generate(scheme)
        secrets.append(secret)
        return secret, public

    monkeypatch.setattr(signers.local, "_generate", recording_generate)
    wrap = kek.wrap

    async def recording_wrap(dek: bytes, aad: bytes) -> bytes:
        deks.append(dek)
        return await wrap(dek, aad)

    monkeypatch.setattr(kek, "wrap", recording_wrap)

    key_id = f"k-{uuid.uuid4()}"
    evm = await signer.create_key(key_id, "secp256k1")
    assert await signer.create_key(key_id, "secp256k1") == evm  # idempotent
    digest = os.urandom(32)
    signature = await signer.sign(evm.key_ref, "secp256k1", digest)
    assert coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None).format(compressed=False) == evm.public_key
    ed = await signer.create_key(f"e-{uuid.uuid4()}", "ed25519")
    message = b"stellar transaction hash or solana message"
    Ed25519PublicKey.from_public_bytes(ed.public_key).verify(await signer.sign(ed.key_ref, "ed25519", message), message)

    assert len(secrets) == 3 and len(deks) == 3 and all(len(d) == 32 for d in deks)
    for info in (evm, ed):
        row = await _row(sessions, info.key_ref)
        assert row.kek_id == settings.keystore_kek_id
        assert row.dek_nonce == b"" and len(row.wrapped_dek) > 32 + 16  # a KMS ciphertext blob
        stored = b"".join([row.ciphertext, row.nonce, row.wrapped_dek, row.dek_nonce, row.public_key.encode()])
        for plaintext in secrets + deks:
            assert plaintext not in stored and plaintext.hex().encode() not in stored

    # Without that KMS key nothing opens: not with KEK bytes, not after moving a row.
    with pytest.raises(SigningFailed, match="cannot be decrypted"):
        await LocalKeystoreSigner(sessions, local_kek()).sign(evm.key_ref, "secp256k1", digest)
    other = await signer.create_key(f"k-{uuid.uuid4()}", "secp256k1")
    source = await _row(sessions, evm.key_ref)
    async with sessions() as session, session.begin():
        target = await session.get(KeystoreKey, other.key_ref)
        target.ciphertext, target.nonce, target.wrapped_dek = source.ciphertext, source.nonce, source.wrapped_dek
        session.add(target)
    with pytest.raises(SigningFailed):  # the encryption context / AAD names the key id
        await signer.sign(other.key_ref, "secp256k1", digest)


async def test_a_disabled_kms_kek_cannot_unseal(kms_kek, sessions):
    settings = await kms_kek.new_settings()
    signer = signer_for_backend("local", settings, sessions)
    info = await signer.create_key(f"k-{uuid.uuid4()}", "ed25519")
    assert await signer.sign(info.key_ref, "ed25519", b"before")
    await kms_kek.disable(settings)
    for s in (signer, signer_for_backend("local", settings, sessions)):  # warm and cold
        with pytest.raises(SigningFailed, match="cannot be decrypted") as ei:
            await s.sign(info.key_ref, "ed25519", b"after")
        assert ei.value.details["code"] in kms_kek.disabled_codes
        assert ei.value.details["row_kek_id"] == settings.keystore_kek_id
    with pytest.raises(SigningFailed):  # nor seal new keys
        await signer.create_key(f"k-{uuid.uuid4()}", "ed25519")


async def test_a_kms_kek_outage_is_transient(kms_kek, sessions):
    settings = await kms_kek.new_settings()
    signer = signer_for_backend("local", settings, sessions)
    info = await signer.create_key(f"k-{uuid.uuid4()}", "secp256k1")
    await kms_kek.outage()
    try:
        with pytest.raises(SignerUnavailable):
            await signer.sign(info.key_ref, "secp256k1", os.urandom(32))
    finally:
        await kms_kek.clear()
    assert len(await signer.sign(info.key_ref, "secp256k1", os.urandom(32))) == 65


async def test_an_unreachable_aws_kms_kek_is_transient(sessions, aws_server):
    settings = Settings(
        environment="test",
        keystore_kek="aws-kms:alias/custody-kek",
        aws_kms=AwsKmsSettings(endpoint_url="http://127.0.0.1:9"),
    )
    signer = signer_for_backend("local", settings, sessions)
    with pytest.raises(SignerUnavailable):
        await signer.create_key(f"k-{uuid.uuid4()}", "secp256k1")


# ------------------------------------------------------------------ settings


AWS_KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
GCP_KEY = "projects/p-1/locations/europe-west1/keyRings/custody/cryptoKeys/keystore-kek"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (base64.b64encode(b"k" * 32).decode(), LocalAesGcmKek),
        (f"  {base64.b64encode(b'k' * 32).decode()}\n", LocalAesGcmKek),  # from a file, with a newline
        (f"aws-kms:{AWS_KEY_ID}", AwsKmsKek),
        ("aws-kms:mrk-1234abcd12ab34cd56ef1234567890ab", AwsKmsKek),
        ("aws-kms:alias/custody/keystore-kek", AwsKmsKek),
        (f"aws-kms:arn:aws:kms:eu-west-1:111122223333:key/{AWS_KEY_ID}", AwsKmsKek),
        ("aws-kms:arn:aws:kms:eu-west-1:111122223333:alias/custody-kek", AwsKmsKek),
        (f"gcp-kms:{GCP_KEY}", GcpKmsKek),
    ],
)
def test_kek_setting_accepts_three_forms(value: str, kind: type, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(keystore_kek=value, keystore_kek_id="kek-7")
    kek = kek_from_settings(settings)
    assert isinstance(kek, kind) and kek.kek_id == "kek-7"
    if kind is LocalAesGcmKek:
        assert settings.keystore_kek_bytes == b"k" * 32
    if "arn:aws:kms:eu-west-1" in value:  # the key's region wins over CUSTODY_AWS_KMS__REGION
        assert kek._kms._client.meta.region_name == "eu-west-1"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("c2hvcnQ=", "base64 of exactly 32 bytes"),
        ("not base64 at all!", "base64 of exactly 32 bytes"),
        ("aws-kms:", "must name a symmetric AWS KMS key"),
        ("aws-kms:my-key", "must name a symmetric AWS KMS key"),
        ("aws-kms:arn:aws:kms:eu-west-1:111122223333:secret/x", "must name a symmetric AWS KMS key"),
        ("gcp-kms:keystore-kek", "must be a CryptoKey name"),
        (f"gcp-kms:{GCP_KEY}/cryptoKeyVersions/1", "not one of its versions"),
        ("azure-kv:https://vault/keys/k", "base64 of exactly 32 bytes, aws-kms:"),
    ],
)
def test_kek_setting_errors_say_what_is_wrong(value: str, message: str, monkeypatch) -> None:
    monkeypatch.setenv("CUSTODY_KEYSTORE_KEK", value)
    with pytest.raises(ValidationError, match=message) as ei:
        Settings()
    assert "KEYSTORE_KEK" in str(ei.value)


def test_production_refuses_the_dev_kek_but_takes_a_kms_kek(monkeypatch) -> None:
    production = {
        "environment": "production",
        "api_keys": {"k-1": "desk"},
        "payload_keys": {"p1": base64.b64encode(os.urandom(32)).decode()},
        "payload_key_id": "p1",
        "codec_auth_token": "t",
        "intent_seal_key": base64.b64encode(os.urandom(32)).decode(),
        "chains": {},
    }
    for dev in (DEV_KEYSTORE_KEK, f" {DEV_KEYSTORE_KEK} "):
        with pytest.raises(ValidationError, match="KEYSTORE_KEK must be set to a real key in production"):
            Settings(keystore_kek=dev, **production)
    assert Settings(keystore_kek=f"gcp-kms:{GCP_KEY}", **production).keystore_kek.get_secret_value() == f"gcp-kms:{GCP_KEY}"
    assert Settings(keystore_kek="aws-kms:alias/custody-kek", **production)
    assert Settings(keystore_kek=base64.b64encode(os.urandom(32)).decode(), **production)
