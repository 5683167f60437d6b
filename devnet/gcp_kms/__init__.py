"""Local Google Cloud KMS (gRPC) for tests: real keys, real signatures, symmetric
Encrypt/Decrypt (ENCRYPT_DECRYPT keys, CRC32C-checked), fault injection.

Usage::

    from devnet.gcp_kms import run_gcp_kms

    async with run_gcp_kms(host="127.0.0.1", port=0) as srv:
        client = srv.async_client()   # real KeyManagementServiceAsyncClient
        srv.set_faults({"AsymmetricSign": {"code": "UNAVAILABLE", "count": 2}})
        ...
        await client.transport.close()
"""

from signers.crc32c import crc32c

from .client import clear_faults, get_faults, make_async_client, reset, set_faults
from .server import CONTROL_SERVICE, GcpKmsServer, run_gcp_kms

__all__ = [
    "CONTROL_SERVICE",
    "GcpKmsServer",
    "clear_faults",
    "crc32c",
    "get_faults",
    "make_async_client",
    "reset",
    "run_gcp_kms",
    "set_faults",
]
