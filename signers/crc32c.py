"""CRC32C (Castagnoli), as Cloud KMS uses for its request/response integrity fields.

google-cloud-kms does not depend on ``google-crc32c``; this is a small table-driven
implementation (the local Cloud KMS server in devnet/ uses it too). If
``google_crc32c`` is importable it is used instead. Check values (RFC 3720 B.4):
crc32c(b"123456789") == 0xE3069283, crc32c(bytes(32)) == 0x8A9136AA.
"""

from __future__ import annotations

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _make_table()


def _crc32c_py(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # pragma: no cover - depends on environment
    import google_crc32c as _g

    def crc32c(data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode("utf-8")
        return int(_g.value(bytes(data)))

except ImportError:

    def crc32c(data: bytes | str) -> int:
        """CRC32C of ``data`` (str is UTF-8 encoded) as an unsigned int."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        return _crc32c_py(bytes(data))


__all__ = ["crc32c"]
