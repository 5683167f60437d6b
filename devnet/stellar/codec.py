"""Small conversions between stellar-sdk XDR objects, strkeys and Horizon's string formats."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from stellar_sdk import StrKey
from stellar_sdk import xdr as x

STROOPS_PER_XLM = 10_000_000
INT64_MAX = 2**63 - 1


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def amount_str(stroops: int) -> str:
    """Horizon's 7-decimal amount format: 12.3456789."""
    sign = "-" if stroops < 0 else ""
    stroops = abs(stroops)
    return f"{sign}{stroops // STROOPS_PER_XLM}.{stroops % STROOPS_PER_XLM:07d}"


def iso_time(unix: int) -> str:
    return datetime.fromtimestamp(unix, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def toid(ledger: int, tx_order: int = 0, op_order: int = 0) -> int:
    """Horizon's total order id (ledger << 32 | tx << 12 | op), used for ids and paging tokens."""
    return (ledger << 32) | (tx_order << 12) | op_order


# ---------------------------------------------------------------- accounts


def account_id_to_str(account_id: x.AccountID) -> str:
    return StrKey.encode_ed25519_public_key(account_id.account_id.ed25519.uint256)


def str_to_account_id(address: str) -> x.AccountID:
    raw = StrKey.decode_ed25519_public_key(address)
    return x.AccountID(x.PublicKey(x.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, x.Uint256(raw)))


@dataclass(frozen=True)
class Muxed:
    """A (possibly multiplexed) account: G address, plus M address and id when muxed."""

    account_id: str
    muxed_id: int | None = None
    muxed_address: str | None = None


def muxed_from_xdr(m: x.MuxedAccount) -> Muxed:
    if m.type == x.CryptoKeyType.KEY_TYPE_MUXED_ED25519:
        raw = m.med25519.ed25519.uint256
        mid = m.med25519.id.uint64
        return Muxed(
            StrKey.encode_ed25519_public_key(raw),
            mid,
            StrKey.encode_med25519_public_key(raw + mid.to_bytes(8, "big")),
        )
    return Muxed(StrKey.encode_ed25519_public_key(m.ed25519.uint256))


def raw_key(address: str) -> bytes:
    return StrKey.decode_ed25519_public_key(address)


# ------------------------------------------------------------------ assets


@dataclass(frozen=True)
class AssetKey:
    """A credit asset (code, issuer); the native asset is represented by ``None``."""

    code: str
    issuer: str

    @property
    def asset_type(self) -> str:
        return "credit_alphanum4" if len(self.code) <= 4 else "credit_alphanum12"

    def to_xdr_asset(self) -> x.Asset:
        issuer = str_to_account_id(self.issuer)
        if len(self.code) <= 4:
            return x.Asset(
                x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4,
                alpha_num4=x.AlphaNum4(x.AssetCode4(self.code.encode().ljust(4, b"\0")), issuer),
            )
        return x.Asset(
            x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12,
            alpha_num12=x.AlphaNum12(x.AssetCode12(self.code.encode().ljust(12, b"\0")), issuer),
        )

    def to_trustline_asset(self) -> x.TrustLineAsset:
        a = self.to_xdr_asset()
        return x.TrustLineAsset(a.type, alpha_num4=a.alpha_num4, alpha_num12=a.alpha_num12)


class InvalidAsset(ValueError):
    pass


def _decode_code(raw: bytes, max_len: int) -> str:
    """Validate an asset code the way stellar-core does: [A-Za-z0-9]+ then only NUL padding."""
    code = raw.rstrip(b"\0")
    if b"\0" in code or not code:
        raise InvalidAsset("bad asset code")
    if not all(chr(c).isascii() and chr(c).isalnum() for c in code):
        raise InvalidAsset("bad asset code")
    if max_len == 12 and len(code) <= 4:
        raise InvalidAsset("alphanum12 code too short")
    return code.decode()


def asset_from_xdr(asset: x.Asset | x.ChangeTrustAsset | x.TrustLineAsset) -> AssetKey | None:
    """Return None for native, an AssetKey for credit assets; raise InvalidAsset otherwise."""
    t = asset.type
    if t == x.AssetType.ASSET_TYPE_NATIVE:
        return None
    if t == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4:
        a = asset.alpha_num4
        return AssetKey(_decode_code(a.asset_code.asset_code4, 4), account_id_to_str(a.issuer))
    if t == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM12:
        a = asset.alpha_num12
        return AssetKey(_decode_code(a.asset_code.asset_code12, 12), account_id_to_str(a.issuer))
    raise InvalidAsset("pool share assets are not supported")


def asset_fields(asset: AssetKey | None, prefix: str = "") -> dict:
    """Horizon's asset_type / asset_code / asset_issuer triple."""
    if asset is None:
        return {f"{prefix}asset_type": "native"}
    return {
        f"{prefix}asset_type": asset.asset_type,
        f"{prefix}asset_code": asset.code,
        f"{prefix}asset_issuer": asset.issuer,
    }


# ----------------------------------------------------------------- signers


def signer_key_to_str(key: x.SignerKey) -> tuple[str, str]:
    """(strkey, horizon type name) for a signer key."""
    t = key.type
    if t == x.SignerKeyType.SIGNER_KEY_TYPE_ED25519:
        return StrKey.encode_ed25519_public_key(key.ed25519.uint256), "ed25519_public_key"
    if t == x.SignerKeyType.SIGNER_KEY_TYPE_PRE_AUTH_TX:
        return StrKey.encode_pre_auth_tx(key.pre_auth_tx.uint256), "preauth_tx"
    if t == x.SignerKeyType.SIGNER_KEY_TYPE_HASH_X:
        return StrKey.encode_sha256_hash(key.hash_x.uint256), "sha256_hash"
    payload = key.ed25519_signed_payload
    raw = payload.ed25519.uint256
    data = payload.payload
    encoded = raw + len(data).to_bytes(4, "big") + data + b"\0" * ((4 - len(data) % 4) % 4)
    return StrKey.encode_ed25519_signed_payload(encoded), "ed25519_signed_payload"


def str_to_signer_key(key: str) -> x.SignerKey:
    if key.startswith("G"):
        return x.SignerKey(
            x.SignerKeyType.SIGNER_KEY_TYPE_ED25519,
            ed25519=x.Uint256(StrKey.decode_ed25519_public_key(key)),
        )
    if key.startswith("T"):
        return x.SignerKey(
            x.SignerKeyType.SIGNER_KEY_TYPE_PRE_AUTH_TX,
            pre_auth_tx=x.Uint256(StrKey.decode_pre_auth_tx(key)),
        )
    if key.startswith("X"):
        return x.SignerKey(
            x.SignerKeyType.SIGNER_KEY_TYPE_HASH_X,
            hash_x=x.Uint256(StrKey.decode_sha256_hash(key)),
        )
    raise ValueError(f"unsupported signer key {key}")


# ---------------------------------------------------------------- memos


def memo_fields(memo: x.Memo) -> dict:
    t = memo.type
    if t == x.MemoType.MEMO_NONE:
        return {"memo_type": "none"}
    if t == x.MemoType.MEMO_TEXT:
        raw = memo.text
        return {
            "memo_type": "text",
            "memo": raw.decode("utf-8", errors="replace"),
            "memo_bytes": b64(raw),
        }
    if t == x.MemoType.MEMO_ID:
        return {"memo_type": "id", "memo": str(memo.id.uint64)}
    if t == x.MemoType.MEMO_HASH:
        return {"memo_type": "hash", "memo": b64(memo.hash.hash)}
    return {"memo_type": "return", "memo": b64(memo.ret_hash.hash)}
