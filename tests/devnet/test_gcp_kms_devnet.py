"""The local Cloud KMS gRPC server driven by the real google-cloud-kms async client.

Signatures are checked independently with cryptography / coincurve / eth_keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import coincurve
import grpc
import pytest
import pytest_asyncio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from eth_keys import keys as eth_keys
from eth_utils import keccak
from google.api_core import exceptions as gexc
from google.cloud import kms_v1
from google.cloud.kms_v1 import KeyManagementServiceAsyncClient
from google.cloud.kms_v1.services.key_management_service.transports import (
    KeyManagementServiceGrpcAsyncIOTransport,
)

from devnet.gcp_kms import crc32c, get_faults, run_gcp_kms, set_faults
from signers.crc32c import _crc32c_py

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
LOCATION = "projects/custody-test/locations/us-east1"
State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState


# ----------------------------------------------------------------------------- fixtures


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gcp():
    async with run_gcp_kms(host="127.0.0.1", port=0) as srv:
        yield srv


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(gcp):
    # Exactly how production code reaches a non-Google endpoint: no credentials needed.
    channel = grpc.aio.insecure_channel(gcp.address)
    kms = KeyManagementServiceAsyncClient(transport=KeyManagementServiceGrpcAsyncIOTransport(channel=channel))
    yield kms
    await kms.transport.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def key_ring(client):
    return await client.create_key_ring(request={"parent": LOCATION, "key_ring_id": f"custody-{uuid.uuid4().hex[:8]}"})


@pytest.fixture(autouse=True)
def _no_leftover_faults(gcp):
    yield
    gcp.clear_faults()


async def _create_key(client, key_ring, algorithm, protection="HSM", key_id=None):
    key = await client.create_crypto_key(
        request={
            "parent": key_ring.name,
            "crypto_key_id": key_id or f"k-{uuid.uuid4().hex[:10]}",
            "crypto_key": {
                "purpose": kms_v1.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN,
                "version_template": {"algorithm": algorithm, "protection_level": protection},
            },
        }
    )
    return key, f"{key.name}/cryptoKeyVersions/1"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def k1_version(client, key_ring):
    _, version = await _create_key(client, key_ring, "EC_SIGN_SECP256K1_SHA256", "HSM")
    return version


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def ed_version(client, key_ring):
    _, version = await _create_key(client, key_ring, "EC_SIGN_ED25519", "SOFTWARE")
    return version


async def _public_key(client, version):
    pk = await client.get_public_key(request={"name": version})
    assert pk.name == version
    assert pk.pem.startswith("-----BEGIN PUBLIC KEY-----\n") and pk.pem.endswith("-----END PUBLIC KEY-----\n")
    assert pk.pem_crc32c == crc32c(pk.pem.encode())
    return pk, serialization.load_pem_public_key(pk.pem.encode())


# -------------------------------------------------------------------------------- tests


def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4 check value
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(b"") == 0
    data = bytes(range(256)) * 3
    assert crc32c(data) == _crc32c_py(data)
    try:
        import google_crc32c
    except ImportError:
        return
    assert crc32c(data) == google_crc32c.value(data)


async def test_key_metadata(client, key_ring, k1_version):
    ring = await client.get_key_ring(request={"name": key_ring.name})
    assert ring.name == key_ring.name and ring.create_time is not None
    key_name = k1_version.rsplit("/cryptoKeyVersions/", 1)[0]
    key = await client.get_crypto_key(request={"name": key_name})
    assert key.purpose == kms_v1.CryptoKey.CryptoKeyPurpose.ASYMMETRIC_SIGN
    assert key.version_template.algorithm == kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_SECP256K1_SHA256
    assert key.version_template.protection_level == kms_v1.ProtectionLevel.HSM
    assert key.destroy_scheduled_duration == dt.timedelta(days=30)
    version = await client.get_crypto_key_version(request={"name": k1_version})
    assert version.state == State.ENABLED
    assert version.algorithm == kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_SECP256K1_SHA256
    assert version.protection_level == kms_v1.ProtectionLevel.HSM

    pager = await client.list_crypto_keys(request={"parent": key_ring.name, "page_size": 1})
    names = [k.name async for k in pager]
    assert key_name in names and len(names) == len(set(names))

    with pytest.raises(gexc.NotFound):
        await client.get_crypto_key(request={"name": f"{key_ring.name}/cryptoKeys/nope"})


async def test_secp256k1_sign_verify_and_eth_recovery(client, k1_version):
    pk, pub = await _public_key(client, k1_version)
    assert pk.algorithm == kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_SECP256K1_SHA256
    assert isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256K1)
    point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    expected_address = eth_keys.PublicKey(point[1:]).to_checksum_address()

    for i in range(5):
        digest = keccak(b"gcp tx #%d" % i)  # keccak hash passed as digest.sha256
        resp = await client.asymmetric_sign(request={"name": k1_version, "digest": {"sha256": digest}, "digest_crc32c": crc32c(digest)})
        assert resp.name == k1_version
        assert resp.verified_digest_crc32c is True
        assert resp.verified_data_crc32c is False
        assert resp.signature_crc32c == crc32c(resp.signature)
        assert resp.protection_level == kms_v1.ProtectionLevel.HSM

        der = resp.signature
        pub.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        with pytest.raises(InvalidSignature):
            pub.verify(der, digest, ec.ECDSA(hashes.SHA256()))  # not re-hashed
        r, s = decode_dss_signature(der)
        if s > SECP256K1_N // 2:
            s = SECP256K1_N - s
        assert coincurve.PublicKey(point).verify(encode_dss_signature(r, s), digest, hasher=None)
        matches = [
            v for v in (0, 1) if eth_keys.Signature(vrs=(v, r, s)).recover_public_key_from_msg_hash(digest).to_checksum_address() == expected_address
        ]
        assert len(matches) == 1


async def test_crc32c_fields(client, k1_version, ed_version):
    digest = keccak(b"crc")
    # without a request checksum the flag stays false
    resp = await client.asymmetric_sign(request={"name": k1_version, "digest": {"sha256": digest}})
    assert resp.verified_digest_crc32c is False and resp.signature_crc32c == crc32c(resp.signature)
    # a wrong checksum is rejected before signing
    with pytest.raises(gexc.InvalidArgument, match="digest_crc32c"):
        await client.asymmetric_sign(request={"name": k1_version, "digest": {"sha256": digest}, "digest_crc32c": (crc32c(digest) + 1) % 2**32})
    data = b"payload"
    with pytest.raises(gexc.InvalidArgument, match="data_crc32c"):
        await client.asymmetric_sign(request={"name": ed_version, "data": data, "data_crc32c": 1})
    # GetPublicKey with an explicit format returns checksummed public_key
    pk = await client.get_public_key(request={"name": k1_version, "public_key_format": "DER"})
    assert pk.public_key.crc32c_checksum == crc32c(pk.public_key.data)
    assert isinstance(serialization.load_der_public_key(pk.public_key.data), ec.EllipticCurvePublicKey)


async def test_wrong_input_kind(client, k1_version, ed_version):
    with pytest.raises(gexc.InvalidArgument):
        await client.asymmetric_sign(request={"name": k1_version, "data": b"raw"})
    with pytest.raises(gexc.InvalidArgument):
        await client.asymmetric_sign(request={"name": k1_version, "digest": {"sha384": b"\x00" * 48}})
    with pytest.raises(gexc.InvalidArgument):
        await client.asymmetric_sign(request={"name": ed_version, "digest": {"sha256": b"\x00" * 32}})


async def test_ed25519_sign_verify(client, ed_version):
    pk, pub = await _public_key(client, ed_version)
    assert pk.algorithm == kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_ED25519
    assert isinstance(pub, ed25519.Ed25519PublicKey)
    message = hashlib.sha256(b"stellar network id").digest() + b"\x00\x00\x00\x02" + b"xdr..." * 20
    resp = await client.asymmetric_sign(request={"name": ed_version, "data": message, "data_crc32c": crc32c(message)})
    assert resp.verified_data_crc32c is True and resp.verified_digest_crc32c is False
    assert resp.name == ed_version
    assert len(resp.signature) == 64
    assert resp.signature_crc32c == crc32c(resp.signature)
    pub.verify(resp.signature, message)
    with pytest.raises(InvalidSignature):
        pub.verify(resp.signature, message[:-1])


async def test_duplicate_creation_is_already_exists(client, key_ring):
    with pytest.raises(gexc.AlreadyExists, match="already exists"):
        await client.create_key_ring(request={"parent": LOCATION, "key_ring_id": key_ring.name.rsplit("/", 1)[1]})
    key, _ = await _create_key(client, key_ring, "EC_SIGN_SECP256K1_SHA256", key_id="evm-hot")
    with pytest.raises(gexc.AlreadyExists, match="CryptoKey .*evm-hot already exists"):
        await _create_key(client, key_ring, "EC_SIGN_SECP256K1_SHA256", key_id="evm-hot")
    # the original survives untouched
    assert (await client.get_crypto_key(request={"name": key.name})).create_time == key.create_time


async def test_secp256k1_requires_hsm(client, key_ring):
    with pytest.raises(gexc.InvalidArgument):
        await _create_key(client, key_ring, "EC_SIGN_SECP256K1_SHA256", protection="SOFTWARE")


async def test_disabled_and_destroyed_versions(client, key_ring):
    _, version = await _create_key(client, key_ring, "EC_SIGN_SECP256K1_SHA256")
    digest = keccak(b"disable me")
    updated = await client.update_crypto_key_version(
        request={"crypto_key_version": {"name": version, "state": State.DISABLED}, "update_mask": {"paths": ["state"]}}
    )
    assert updated.state == State.DISABLED
    with pytest.raises(gexc.FailedPrecondition) as ei:
        await client.asymmetric_sign(request={"name": version, "digest": {"sha256": digest}})
    assert ei.value.message == f"{version} is not enabled, current state is: DISABLED."
    with pytest.raises(gexc.FailedPrecondition):
        await client.get_public_key(request={"name": version})

    await client.update_crypto_key_version(
        request={"crypto_key_version": {"name": version, "state": State.ENABLED}, "update_mask": {"paths": ["state"]}}
    )
    resp = await client.asymmetric_sign(request={"name": version, "digest": {"sha256": digest}})
    _, pub = await _public_key(client, version)
    pub.verify(resp.signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))

    destroyed = await client.destroy_crypto_key_version(request={"name": version})
    assert destroyed.state == State.DESTROY_SCHEDULED
    remaining = destroyed.destroy_time - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29, hours=23) < remaining <= dt.timedelta(days=30)
    with pytest.raises(gexc.FailedPrecondition, match="DESTROY_SCHEDULED"):
        await client.asymmetric_sign(request={"name": version, "digest": {"sha256": digest}})
    restored = await client.restore_crypto_key_version(request={"name": version})
    assert restored.state == State.DISABLED


async def test_fault_injection_unavailable_is_retried_by_client(gcp, client, k1_version):
    digest = keccak(b"flaky")
    await set_faults(gcp.address, {"AsymmetricSign": {"code": "UNAVAILABLE", "count": 2}})  # over the wire
    before = (await get_faults(gcp.address))["calls"].get("AsymmetricSign", 0)
    resp = await client.asymmetric_sign(request={"name": k1_version, "digest": {"sha256": digest}})
    assert resp.signature_crc32c == crc32c(resp.signature)
    snap = gcp.faults()
    assert snap["fired"]["AsymmetricSign"] == 2
    assert snap["calls"]["AsymmetricSign"] - before == 3  # default retry policy retried twice
    assert snap["rules"] == {}


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [("UNAVAILABLE", gexc.ServiceUnavailable), ("RESOURCE_EXHAUSTED", gexc.ResourceExhausted)],
)
async def test_fault_injection_codes(gcp, client, k1_version, code, exc_type):
    digest = keccak(code.encode())
    gcp.set_faults({"AsymmetricSign": {"code": code, "count": 1}})
    with pytest.raises(exc_type) as ei:
        await client.asymmetric_sign(request={"name": k1_version, "digest": {"sha256": digest}}, retry=None)
    assert ei.value.grpc_status_code == getattr(grpc.StatusCode, code)
    assert ei.value.message
    resp = await client.asymmetric_sign(request={"name": k1_version, "digest": {"sha256": digest}}, retry=None)
    assert resp.verified_digest_crc32c is False and len(resp.signature) >= 68
    assert gcp.faults()["fired"] == {"AsymmetricSign": 1}
