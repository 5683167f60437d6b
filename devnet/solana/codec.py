"""Small wire codecs the devnet needs and the installed packages lack: base58 and zstd frames."""

from __future__ import annotations

import base64
import struct

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58, as Solana uses for keys, signatures and binary payloads."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, rem = divmod(n, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of :func:`b58encode`; raises ``ValueError`` on a character outside the alphabet."""
    n = 0
    for ch in text:
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise ValueError(f"invalid base58 character {ch!r}") from None
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict base64 (padding and alphabet checked), like the Rust `base64` crate the RPC uses."""
    return base64.b64decode(text.encode("ascii"), validate=True)


_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_MAX_BLOCK = 128 * 1024


def zstd_frame(data: bytes) -> bytes:
    """A valid zstd frame holding ``data`` in raw (stored) blocks.

    No zstd library is installed here; a stored frame is what `base64+zstd` account data needs to be
    decodable by any zstd decoder. It is not smaller than the input.
    """
    size = len(data)
    # Single_Segment_flag (0x20) so no window descriptor; Frame_Content_Size_flag picks the field width.
    if size < 256:
        header = bytes([0x20]) + struct.pack("<B", size)
    elif size < 65536 + 256:
        header = bytes([0x20 | 0x40]) + struct.pack("<H", size - 256)
    elif size < 2**32:
        header = bytes([0x20 | 0x80]) + struct.pack("<I", size)
    else:
        header = bytes([0x20 | 0xC0]) + struct.pack("<Q", size)
    blocks = bytearray()
    chunks = [data[i : i + _ZSTD_MAX_BLOCK] for i in range(0, size, _ZSTD_MAX_BLOCK)] or [b""]
    for index, chunk in enumerate(chunks):
        last = 1 if index == len(chunks) - 1 else 0
        block_header = last | (0 << 1) | (len(chunk) << 3)  # block type 0 = raw
        blocks += block_header.to_bytes(3, "little") + chunk
    return struct.pack("<I", _ZSTD_MAGIC) + header + bytes(blocks)
