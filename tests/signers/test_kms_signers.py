"""AWS KMS and Cloud KMS signers against the local KMS servers (devnet/aws_kms, devnet/gcp_kms).

Every behavioural test runs once per backend through a small harness that knows how to reach
around the signer (disable a key, count keys, inject faults). No PostgreSQL/Temporal needed.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import coincurve
import pytest
import pytest_asyncio
from botocore.config import Config
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_keys import keys as eth_keys
from eth_utils import keccak
from google.cloud import kms_v1

from core.errors import SignerUnavailable, SigningFailed
from core.settings import AwsKmsSettings, GcpKmsSettings, Settings
from signers.aws_kms import AwsKmsSigner, alias_name
from signers.crc32c import crc32c
from signers.gcp_kms import GcpKmsSigner, crypto_key_id
from signers.local import SECP256K1_N
from signers.registry import SignerSet, signer_from_settings

State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})
AWS_CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


def _address(public_key: bytes) -> str:
    assert len(public_key) == 65 and public_key[0] == 4
    return eth_keys.PublicKey(public_key[1:]).to_checksum_address()


@dataclass
class Harness:
    """One backend: the signer under test plus admin access to the KMS behind it."""

    name: str
    signer: Any
    disable: Callable[[str], Awaitable[None]]
    live_keys: Callable[[str], Awaitable[int]]  # keys in the KMS for a custody key id
    inject: Callable[[str, int], Awaitable[None]]  # (transient|denied, count) faults on Sign
    clear_faults: Callable[[], Awaitable[None]]
    fault_count: int  # enough faults to outlast the signer's own client retries
    wrap: Callable[[], Any]  # a signer whose client signs a different message than asked


# ------------------------------------------------------------------------------- AWS


class _AwsOtherMessage:
    """A boto3 client whose Sign signs something other than what it was given."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def sign(self, **kw: Any) -> Any:
        kw["Message"] = keccak(kw["Message"]) if kw["MessageType"] == "DIGEST" else kw["Message"] + b"!"
        return self._inner.sign(**kw)


@pytest.fixture(scope="module")
def aws(aws_server) -> Harness:
    settings = AwsKmsSettings(region=aws_server.region, endpoint_url=aws_server.endpoint_url, alias_prefix=f"custody-test-{uuid.uuid4().hex[:8]}")
    with pytest.MonkeyPatch.context() as mp:  # boto3's default credential chain, from the environment
        for k, v in AWS_CREDS.items():
            mp.setenv(k, v)
        signer = AwsKmsSigner(settings)
    admin = aws_server.client("kms", config=NO_RETRY)

    async def disable(key_ref: str) -> None:
        admin.disable_key(KeyId=key_ref)

    async def live_keys(key_id: str) -> int:
        n = 0
        for key in admin.list_keys()["Keys"]:
            tags = admin.list_resource_tags(KeyId=key["KeyId"])["Tags"]
            if {"TagKey": "custody-key-id", "TagValue": key_id} in tags:
                n += admin.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
        return n

    async def inject(kind: str, count: int) -> None:
        error = {"transient": "ThrottlingException", "internal": "KMSInternalException", "denied": "AccessDeniedException"}[kind]
        aws_server.set_faults({"Sign": {"error": error, "count": count}})

    async def clear() -> None:
        aws_server.clear_faults()

    return Harness(
        "aws",
        signer,
        disable,
        live_keys,
        inject,
        clear,
        fault_count=2,  # botocore: 2 attempts
        wrap=lambda: AwsKmsSigner(settings, client=_AwsOtherMessage(signer._client)),
    )


# ------------------------------------------------------------------------------- GCP


class _GcpOtherMessage:
    """A Cloud KMS client whose AsymmetricSign signs something other than what it was given
    (with consistent CRC32Cs, so only the local verification can notice)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def asymmetric_sign(self, request: dict[str, Any], **kw: Any) -> Any:
        request = dict(request)
        if "digest" in request:
            other = keccak(request["digest"]["sha256"])
            request.update(digest={"sha256": other}, digest_crc32c=crc32c(other))
        else:
            other = request["data"] + b"!"
            request.update(data=other, data_crc32c=crc32c(other))
        return await self._inner.asymmetric_sign(request=request, **kw)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gcp(gcp_server):
    srv = gcp_server  # the session's (tests/conftest.py)
    settings = GcpKmsSettings(
        project="custody-test",
        location="us-east1",
        key_ring=f"ring-{uuid.uuid4().hex[:8]}",
        protection_level="HSM",
        endpoint=srv.address,
    )
    signer = GcpKmsSigner(settings)
    admin = srv.async_client()

    async def disable(key_ref: str) -> None:
        await admin.update_crypto_key_version(
            request={"crypto_key_version": {"name": key_ref, "state": State.DISABLED}, "update_mask": {"paths": ["state"]}}
        )

    async def live_keys(key_id: str) -> int:
        pager = await admin.list_crypto_keys(request={"parent": signer.key_ring_name})
        return sum([k.name.endswith("/" + crypto_key_id(key_id)) async for k in pager])

    async def inject(kind: str, count: int) -> None:
        code = {"transient": "UNAVAILABLE", "internal": "RESOURCE_EXHAUSTED", "denied": "PERMISSION_DENIED"}[kind]
        srv.set_faults({"AsymmetricSign": {"code": code, "count": count}})

    async def clear() -> None:
        srv.clear_faults()

    yield Harness(
        "gcp",
        signer,
        disable,
        live_keys,
        inject,
        clear,
        fault_count=1000,  # UNAVAILABLE is retried by the client for a 2 s window
        wrap=lambda: GcpKmsSigner(settings, client=_GcpOtherMessage(signer._kms())),
    )
    await signer.aclose()
    await admin.transport.close()
    srv.clear_faults()  # the server is the session's: hand it on without faults


@pytest.fixture(params=["aws", "gcp"])
def kms(request) -> Harness:
    return request.getfixturevalue(request.param)


@pytest_asyncio.fixture(loop_scope="session")
async def clean(kms: Harness):
    yield kms
    await kms.clear_faults()


def _key_id() -> str:
    return f"wallet-{uuid.uuid4()}"


# ------------------------------------------------------------------------------- tests


async def test_create_key_is_idempotent(clean: Harness):
    signer, key_id = clean.signer, _key_id()
    first = await signer.create_key(key_id, "secp256k1")
    again = await signer.create_key(key_id, "secp256k1")
    assert again == first
    assert len(first.public_key) == 65 and first.public_key[0] == 4
    assert await clean.live_keys(key_id) == 1
    # a fresh signer (new process, cold caches) finds the same key
    fresh = clean.wrap()
    assert await fresh.create_key(key_id, "secp256k1") == first
    assert await clean.live_keys(key_id) == 1
    # the same key id cannot come back as another scheme
    with pytest.raises(SigningFailed):
        await signer.create_key(key_id, "ed25519")
    if clean.name == "aws":
        assert first.key_ref.startswith("arn:aws:kms:")
    else:
        assert first.key_ref.endswith(f"/cryptoKeys/{crypto_key_id(key_id)}/cryptoKeyVersions/1")


async def test_concurrent_create_key_yields_one_key(clean: Harness):
    key_id = _key_id()
    infos = await asyncio.gather(*(clean.signer.create_key(key_id, "ed25519") for _ in range(4)))
    assert len(set(infos)) == 1
    assert len(infos[0].public_key) == 32
    assert await clean.live_keys(key_id) == 1  # AWS: the losers' keys are scheduled for deletion


async def test_secp256k1_signatures_recover_to_the_key_address_with_low_s(clean: Harness):
    info = await clean.signer.create_key(_key_id(), "secp256k1")
    address = _address(info.public_key)
    seen_v = set()
    for i in range(8):
        digest = keccak(b"custody digest %d" % i)
        sig = await clean.signer.sign(info.key_ref, "secp256k1", digest)
        assert len(sig) == 65
        r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
        assert 0 < s <= SECP256K1_N // 2 and v in (0, 1)
        seen_v.add(v)
        recovered = eth_keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest)
        assert recovered.to_checksum_address() == address
        assert coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None).format(compressed=False) == info.public_key
    with pytest.raises(SigningFailed):
        await clean.signer.sign(info.key_ref, "secp256k1", b"\x01" * 31)


async def test_ed25519_signature_verifies(clean: Harness):
    info = await clean.signer.create_key(_key_id(), "ed25519")
    message = b"solana message \x00\x01" * 20
    sig = await clean.signer.sign(info.key_ref, "ed25519", message)
    assert len(sig) == 64
    pub = Ed25519PublicKey.from_public_bytes(info.public_key)
    pub.verify(sig, message)
    with pytest.raises(InvalidSignature):
        pub.verify(sig, message + b"x")


async def test_evm_transaction_signed_by_kms_recovers_to_the_wallet(clean: Harness):
    info = await clean.signer.create_key(_key_id(), "secp256k1")
    address = _address(info.public_key)
    tx = {
        "type": 2,
        "chainId": 80002,
        "nonce": 7,
        "gas": 21000,
        "maxFeePerGas": 60 * 10**9,
        "maxPriorityFeePerGas": 25 * 10**9,
        "to": "0x000000000000000000000000000000000000dEaD",
        "value": 10**17,
        "data": b"",
    }
    unsigned = TypedTransaction.from_dict(tx)
    sig = await clean.signer.sign(info.key_ref, "secp256k1", unsigned.hash())
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    raw = TypedTransaction.from_dict({**tx, "v": v, "r": r, "s": s}).encode()
    assert Account.recover_transaction(raw) == address


async def test_disabled_key_is_a_permanent_failure(clean: Harness):
    info = await clean.signer.create_key(_key_id(), "secp256k1")
    await clean.signer.sign(info.key_ref, "secp256k1", keccak(b"before"))  # public key now cached
    await clean.disable(info.key_ref)
    with pytest.raises(SigningFailed) as ei:
        await clean.signer.sign(info.key_ref, "secp256k1", keccak(b"after"))
    assert ei.value.details["code"] in ("DisabledException", "FAILED_PRECONDITION")
    with pytest.raises(SigningFailed):  # a cold signer fails on GetPublicKey the same way
        await clean.wrap().sign(info.key_ref, "secp256k1", keccak(b"after"))


@pytest.mark.parametrize("kind", ["transient", "internal"])
async def test_throttling_and_unavailability_are_transient(clean: Harness, kind: str):
    info = await clean.signer.create_key(_key_id(), "secp256k1")
    count = clean.fault_count if kind == "transient" else 2
    await clean.inject(kind, count)
    with pytest.raises(SignerUnavailable) as ei:
        await clean.signer.sign(info.key_ref, "secp256k1", keccak(b"busy"))
    assert ei.value.details["code"] in ("ThrottlingException", "KMSInternalException", "UNAVAILABLE", "RESOURCE_EXHAUSTED")
    await clean.clear_faults()
    sig = await clean.signer.sign(info.key_ref, "secp256k1", keccak(b"busy"))
    assert len(sig) == 65


async def test_permission_denied_is_permanent(clean: Harness):
    info = await clean.signer.create_key(_key_id(), "ed25519")
    await clean.inject("denied", 1)
    with pytest.raises(SigningFailed) as ei:
        await clean.signer.sign(info.key_ref, "ed25519", b"msg")
    assert ei.value.details["code"] in ("AccessDeniedException", "PERMISSION_DENIED")


@pytest.mark.parametrize("scheme", ["secp256k1", "ed25519"])
async def test_signature_over_another_message_is_refused(clean: Harness, scheme: str):
    tampering = clean.wrap()
    info = await tampering.create_key(_key_id(), scheme)
    message = keccak(b"the real digest")
    with pytest.raises(SigningFailed):
        await tampering.sign(info.key_ref, scheme, message)
    # the honest signer signs the same message fine
    assert await clean.signer.sign(info.key_ref, scheme, message)


async def test_aws_botocore_retries_once_then_reports(aws, aws_server):
    info = await aws.signer.create_key(_key_id(), "secp256k1")
    before = aws_server.faults()["calls"].get("GetPublicKey", 0)
    aws_server.set_faults({"Sign": {"error": "ThrottlingException", "count": 1}})
    assert len(await aws.signer.sign(info.key_ref, "secp256k1", keccak(b"retry"))) == 65  # 2nd attempt passes
    snap = aws_server.faults()
    assert snap["fired"]["Sign"] == 1
    assert snap["calls"].get("GetPublicKey", 0) == before  # the public key came from the cache
    aws_server.clear_faults()


async def test_aws_alias_race_lost_retires_the_orphan_key(aws, aws_server):
    """CreateAlias answers AlreadyExists (a concurrent retry won): use the winner's key,
    schedule deletion of ours."""
    admin = aws_server.client("kms", config=NO_RETRY)
    mine: list[str] = []

    class RaceLost:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def create_alias(self, AliasName: str, TargetKeyId: str) -> Any:  # noqa: N803
            mine.append(TargetKeyId)
            winner = admin.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
            admin.create_alias(AliasName=AliasName, TargetKeyId=winner["KeyId"])
            return self._inner.create_alias(AliasName=AliasName, TargetKeyId=TargetKeyId)

    signer = AwsKmsSigner(aws.signer._settings, client=RaceLost(aws.signer._client))
    key_id = _key_id()
    info = await signer.create_key(key_id, "secp256k1")
    alias = alias_name(aws.signer._settings.alias_prefix, key_id)
    winner = admin.describe_key(KeyId=alias)["KeyMetadata"]
    assert info.key_ref == winner["Arn"] and winner["KeyId"] not in mine
    assert admin.describe_key(KeyId=mine[0])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert await aws.signer.create_key(key_id, "secp256k1") == info
    assert len(await aws.signer.sign(info.key_ref, "secp256k1", keccak(b"winner"))) == 65


async def test_aws_connection_refused_is_transient():
    with pytest.MonkeyPatch.context() as mp:
        for k, v in AWS_CREDS.items():
            mp.setenv(k, v)
        signer = AwsKmsSigner(AwsKmsSettings(endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(SignerUnavailable):
        await signer.create_key(_key_id(), "secp256k1")
    signer.close()


# ------------------------------------------------------------------------------- units


def test_kms_ids_are_deterministic_and_valid():
    for key_id in ("wallet-" + str(uuid.UUID(int=1)), "x" * 300, "weird key/ü:1", "a"):
        cid = crypto_key_id(key_id)
        assert cid == crypto_key_id(key_id)
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,63}", cid)
        alias = alias_name("custody-prod", key_id)
        assert alias == alias_name("custody-prod", key_id)
        assert re.fullmatch(r"alias/[a-zA-Z0-9/_-]+", alias) and len(alias) <= 256
    assert crypto_key_id("wallet-a") != crypto_key_id("wallet_a")
    assert alias_name("p", "wallet-1") == "alias/p/wallet-1"
    assert crc32c(b"123456789") == 0xE3069283 and crc32c(bytes(32)) == 0x8A9136AA


def test_registry_builds_configured_backends(monkeypatch):
    for k, v in AWS_CREDS.items():
        monkeypatch.setenv(k, v)
    aws_settings = Settings(signer_backend="aws-kms", aws_kms=AwsKmsSettings(endpoint_url="http://127.0.0.1:9"))
    assert isinstance(signer_from_settings(aws_settings, None), AwsKmsSigner)  # type: ignore[arg-type]
    gcp_settings = Settings(signer_backend="gcp-kms")
    assert isinstance(signer_from_settings(gcp_settings, None), GcpKmsSigner)  # type: ignore[arg-type]
    signers = SignerSet(gcp_settings, None)  # type: ignore[arg-type]
    assert signers.default is signers.get("gcp-kms")
    assert signers.get("local").backend == "local"
    assert isinstance(signers.get("aws-kms"), AwsKmsSigner)
    with pytest.raises(SigningFailed):
        signers.get("hsm-9000")
    monkeypatch.setenv("CUSTODY_SIGNER_BACKEND", "aws-kms")
    monkeypatch.setenv("CUSTODY_AWS_KMS__ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("CUSTODY_AWS_KMS__ALIAS_PREFIX", "custody-prod")
    env = Settings()
    assert env.signer_backend == "aws-kms" and env.aws_kms.alias_prefix == "custody-prod"
