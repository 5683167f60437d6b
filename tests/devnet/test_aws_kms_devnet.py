"""The AWS devnet (moto server + custody KMS extension) driven by real boto3 over HTTP.

Signatures are checked independently with cryptography / coincurve / eth_keys.
"""

from __future__ import annotations

import hashlib
import sys
import time

import boto3
import coincurve
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
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

from devnet.aws_kms import run_aws_kms

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def aws():
    t0 = time.monotonic()
    with run_aws_kms(host="127.0.0.1", port=0) as srv:
        srv.startup_seconds = time.monotonic() - t0
        yield srv


@pytest.fixture(scope="module")
def kms(aws):
    return boto3.client(
        "kms",
        endpoint_url=aws.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=NO_RETRY,
    )


@pytest.fixture(autouse=True)
def _no_leftover_faults(aws):
    yield
    aws.clear_faults()


@pytest.fixture(scope="module")
def k1_key(kms):
    meta = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY", Description="evm hot")["KeyMetadata"]
    return meta


@pytest.fixture(scope="module")
def ed_key(kms):
    return kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="SIGN_VERIFY")["KeyMetadata"]


def _code(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def _k1_public_key(kms, key_id) -> ec.EllipticCurvePublicKey:
    resp = kms.get_public_key(KeyId=key_id)
    assert resp["KeySpec"] == "ECC_SECG_P256K1"
    assert resp["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    pub = serialization.load_der_public_key(resp["PublicKey"])
    assert isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256K1)
    return pub


# -------------------------------------------------------------------------------- tests


def test_server_starts_fast_and_patches_stay_in_subprocess(aws):
    assert aws.endpoint_url.startswith("http://127.0.0.1:")
    assert aws.process is not None and aws.process.poll() is None
    assert aws.startup_seconds < 10  # ~1.3 s on an idle machine
    mod = sys.modules.get("moto.kms.responses")
    if mod is not None:  # some other test imported moto: it must be unpatched here
        from devnet.aws_kms import moto_ext

        assert mod.KmsResponse.sign is not moto_ext._response_sign


def test_secp256k1_digest_signature_verifies_and_recovers_eth_address(kms, k1_key):
    pub = _k1_public_key(kms, k1_key["KeyId"])
    point = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert len(point) == 65 and point[0] == 4
    expected_address = eth_keys.PublicKey(point[1:]).to_checksum_address()

    seen_high_s = seen_low_s = False
    for i in range(6):
        digest = keccak(b"custody tx #%d" % i)
        resp = kms.sign(KeyId=k1_key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
        assert resp["KeyId"] == k1_key["Arn"]
        assert resp["SigningAlgorithm"] == "ECDSA_SHA_256"
        der = resp["Signature"]

        # Signed over the digest itself (prehashed), not over sha256(digest) as stock moto does.
        pub.verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        with pytest.raises(InvalidSignature):
            pub.verify(der, digest, ec.ECDSA(hashes.SHA256()))

        r, s = decode_dss_signature(der)
        if s > SECP256K1_N // 2:  # KMS does not normalize; the signer must (EIP-2)
            seen_high_s = True
            s = SECP256K1_N - s
        else:
            seen_low_s = True
        # libsecp256k1 only accepts the low-s form
        assert coincurve.PublicKey(point).verify(encode_dss_signature(r, s), digest, hasher=None)
        recovered = []
        for v in (0, 1):
            sig = eth_keys.Signature(vrs=(v, r, s))
            if sig.recover_public_key_from_msg_hash(digest).to_checksum_address() == expected_address:
                recovered.append(v)
        assert len(recovered) == 1, "exactly one recovery id must give the KMS key's address"

        # KMS Verify agrees, and rejects a different digest like AWS does.
        ok = kms.verify(
            KeyId=k1_key["KeyId"],
            Message=digest,
            MessageType="DIGEST",
            Signature=der,
            SigningAlgorithm="ECDSA_SHA_256",
        )
        assert ok["SignatureValid"] is True
        with pytest.raises(ClientError) as ei:
            kms.verify(
                KeyId=k1_key["KeyId"],
                Message=keccak(b"other"),
                MessageType="DIGEST",
                Signature=der,
                SigningAlgorithm="ECDSA_SHA_256",
            )
        assert _code(ei.value) == ("KMSInvalidSignatureException", 400)
    assert seen_low_s or seen_high_s


def test_raw_message_type_still_hashes(kms, k1_key):
    pub = _k1_public_key(kms, k1_key["KeyId"])
    msg = b"raw message"
    der = kms.sign(KeyId=k1_key["KeyId"], Message=msg, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    pub.verify(der, msg, ec.ECDSA(hashes.SHA256()))
    pub.verify(der, hashlib.sha256(msg).digest(), ec.ECDSA(Prehashed(hashes.SHA256())))


def test_digest_validation(kms, k1_key):
    with pytest.raises(ClientError) as ei:
        kms.sign(KeyId=k1_key["KeyId"], Message=b"\x01" * 31, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert _code(ei.value) == ("ValidationException", 400)
    assert "invalid length" in ei.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as ei:
        kms.sign(KeyId=k1_key["KeyId"], Message=b"\x01" * 32, MessageType="DIGEST", SigningAlgorithm="ED25519_SHA_512")
    assert _code(ei.value) == ("InvalidKeyUsageException", 400)


def test_describe_key_and_create_validation(kms, k1_key, ed_key):
    meta = kms.describe_key(KeyId=ed_key["KeyId"])["KeyMetadata"]
    assert meta["KeySpec"] == "ECC_NIST_EDWARDS25519"
    assert meta["KeyUsage"] == "SIGN_VERIFY"
    assert meta["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"]
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert "EncryptionAlgorithms" not in meta
    meta = kms.describe_key(KeyId=k1_key["Arn"])["KeyMetadata"]
    assert meta["KeySpec"] == "ECC_SECG_P256K1" and meta["SigningAlgorithms"] == ["ECDSA_SHA_256"]
    with pytest.raises(ClientError) as ei:
        kms.create_key(KeySpec="ECC_NIST_EDWARDS25519", KeyUsage="ENCRYPT_DECRYPT")
    assert _code(ei.value) == ("ValidationException", 400)
    with pytest.raises(ClientError) as ei:
        kms.create_key(KeySpec="ECC_SECG_P256K1")  # KeyUsage defaults to ENCRYPT_DECRYPT
    assert _code(ei.value) == ("ValidationException", 400)


def test_ed25519_sign_verify(kms, ed_key):
    resp = kms.get_public_key(KeyId=ed_key["KeyId"])
    assert resp["KeyId"] == ed_key["Arn"]
    assert resp["KeySpec"] == "ECC_NIST_EDWARDS25519"
    assert resp["SigningAlgorithms"] == ["ED25519_SHA_512", "ED25519_PH_SHA_512"]
    der = resp["PublicKey"]
    assert len(der) == 44 and der[:12] == bytes.fromhex("302a300506032b6570032100")  # SPKI, OID 1.3.101.112
    pub = serialization.load_der_public_key(der)
    assert isinstance(pub, ed25519.Ed25519PublicKey)

    message = b"solana message bytes \x00\x01\x02" * 10
    sig = kms.sign(KeyId=ed_key["KeyId"], Message=message, MessageType="RAW", SigningAlgorithm="ED25519_SHA_512")
    assert sig["SigningAlgorithm"] == "ED25519_SHA_512" and sig["KeyId"] == ed_key["Arn"]
    signature = sig["Signature"]
    assert len(signature) == 64  # raw R || S (RFC 8032), not DER
    pub.verify(signature, message)
    with pytest.raises(InvalidSignature):
        pub.verify(signature, message + b"!")
    raw_pub = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert len(raw_pub) == 32

    assert (
        kms.verify(
            KeyId=ed_key["KeyId"],
            Message=message,
            MessageType="RAW",
            Signature=signature,
            SigningAlgorithm="ED25519_SHA_512",
        )["SignatureValid"]
        is True
    )

    # ED25519_SHA_512 requires MessageType RAW
    with pytest.raises(ClientError) as ei:
        kms.sign(KeyId=ed_key["KeyId"], Message=hashlib.sha512(message).digest(), MessageType="DIGEST", SigningAlgorithm="ED25519_SHA_512")
    assert _code(ei.value) == ("ValidationException", 400)
    # ...and ECDSA algorithms are not valid for an Edwards key
    with pytest.raises(ClientError) as ei:
        kms.sign(KeyId=ed_key["KeyId"], Message=message, MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
    assert _code(ei.value) == ("InvalidKeyUsageException", 400)


def test_ed25519ph_digest(kms, ed_key):
    digest = hashlib.sha512(b"prehashed payload").digest()
    signature = kms.sign(KeyId=ed_key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ED25519_PH_SHA_512")["Signature"]
    assert len(signature) == 64
    assert (
        kms.verify(
            KeyId=ed_key["KeyId"],
            Message=digest,
            MessageType="DIGEST",
            Signature=signature,
            SigningAlgorithm="ED25519_PH_SHA_512",
        )["SignatureValid"]
        is True
    )
    # Ed25519ph is not plain Ed25519 over the digest
    pub = serialization.load_der_public_key(kms.get_public_key(KeyId=ed_key["KeyId"])["PublicKey"])
    with pytest.raises(InvalidSignature):
        pub.verify(signature, digest)
    try:
        from Crypto.Hash import SHA512
        from Crypto.Signature import eddsa
    except ImportError:
        return
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    eddsa.new(eddsa.import_public_key(raw), "rfc8032").verify(SHA512.new(digest), signature)


def test_disabled_and_pending_deletion_keys(kms):
    key = kms.create_key(KeySpec="ECC_SECG_P256K1", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    digest = keccak(b"x")
    kms.disable_key(KeyId=key["Arn"])  # ARN accepted like AWS
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    with pytest.raises(ClientError) as ei:
        kms.sign(KeyId=key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert _code(ei.value) == ("DisabledException", 400)
    assert ei.value.response["Error"]["Message"] == f"{key['Arn']} is disabled."
    with pytest.raises(ClientError) as ei:
        kms.get_public_key(KeyId=key["KeyId"])
    assert _code(ei.value) == ("DisabledException", 400)

    kms.enable_key(KeyId=key["KeyId"])
    der = kms.sign(KeyId=key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")["Signature"]
    _k1_public_key(kms, key["KeyId"]).verify(der, digest, ec.ECDSA(Prehashed(hashes.SHA256())))

    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    with pytest.raises(ClientError) as ei:
        kms.sign(KeyId=key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert _code(ei.value) == ("KMSInvalidStateException", 400)


def test_aliases(kms, k1_key):
    kms.create_alias(AliasName="alias/custody-evm-hot", TargetKeyId=k1_key["KeyId"])
    aliases = {a["AliasName"]: a for a in kms.list_aliases(KeyId=k1_key["KeyId"])["Aliases"]}
    assert aliases["alias/custody-evm-hot"]["TargetKeyId"] == k1_key["KeyId"]
    assert aliases["alias/custody-evm-hot"]["AliasArn"].endswith(":alias/custody-evm-hot")
    digest = keccak(b"via alias")
    resp = kms.sign(KeyId="alias/custody-evm-hot", Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert resp["KeyId"] == k1_key["Arn"]
    _k1_public_key(kms, "alias/custody-evm-hot").verify(resp["Signature"], digest, ec.ECDSA(Prehashed(hashes.SHA256())))


@pytest.mark.parametrize(
    ("error", "status"),
    [("ThrottlingException", 400), ("KMSInternalException", 500), ("DependencyTimeoutException", 500)],
)
def test_fault_injection_error_codes(aws, kms, k1_key, error, status):
    snap = aws.set_faults({"Sign": {"error": error, "count": 2}})
    assert snap["rules"]["Sign"]["count"] == 2 and snap["rules"]["Sign"]["status"] == status
    digest = keccak(error.encode())
    for _ in range(2):
        with pytest.raises(ClientError) as ei:
            kms.sign(KeyId=k1_key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
        assert _code(ei.value) == (error, status)
        assert ei.value.response["Error"]["Message"]
    # third call goes through; other operations were never affected
    kms.describe_key(KeyId=k1_key["KeyId"])
    resp = kms.sign(KeyId=k1_key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert len(resp["Signature"]) >= 68
    snap = aws.faults()
    assert snap["rules"] == {} and snap["fired"]["Sign"] == 2


def test_botocore_retries_through_throttling(aws, k1_key):
    client = aws.client("kms", config=Config(retries={"total_max_attempts": 3, "mode": "standard"}))
    aws.set_faults({"TrentService.Sign": {"error": "ThrottlingException", "count": 2}})
    before = aws.faults()["calls"].get("Sign", 0)
    digest = keccak(b"retry me")
    resp = client.sign(KeyId=k1_key["KeyId"], Message=digest, MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    assert resp["ResponseMetadata"]["RetryAttempts"] == 2
    snap = aws.faults()
    assert snap["fired"]["Sign"] == 2
    assert snap["calls"]["Sign"] - before == 3


def test_fault_control_rejects_bad_specs(aws):
    with pytest.raises(RuntimeError, match="HTTP 400"):
        aws.set_faults({"Sign": {"error": "NoSuchError"}})
    with pytest.raises(RuntimeError, match="HTTP 400"):
        aws.set_faults({"Sign": {"error": "ThrottlingException", "bogus": 1}})
    assert aws.set_faults({"Sign": {"error": "CustomThing", "status": 503, "count": 1}})["rules"]["Sign"]["status"] == 503
    assert aws.set_faults({"Sign": None})["rules"] == {}


def test_secrets_manager_in_same_server(aws):
    sm = aws.client("secretsmanager", config=NO_RETRY)
    arn = sm.create_secret(Name="custody/db-password", SecretString="s3cret")["ARN"]
    assert sm.get_secret_value(SecretId="custody/db-password")["SecretString"] == "s3cret"
    sm.put_secret_value(SecretId=arn, SecretString="rotated")
    assert sm.get_secret_value(SecretId=arn)["SecretString"] == "rotated"
    with pytest.raises(ClientError) as ei:
        sm.get_secret_value(SecretId="custody/missing")
    assert _code(ei.value)[0] == "ResourceNotFoundException"
    aws.set_faults({"GetSecretValue": {"error": "InternalServiceError"}})
    with pytest.raises(ClientError) as ei:
        sm.get_secret_value(SecretId=arn)
    assert _code(ei.value) == ("InternalServiceError", 500)
