"""SPL Token / Token-2022 account decoding, in the shapes Agave's account-decoder produces."""

from __future__ import annotations

import struct
from typing import Any

from solders.account_decoder import UiTokenAmount
from solders.pubkey import Pubkey
from solders.token.state import Mint, TokenAccount, TokenAccountState

TOKEN_PROGRAM_ID = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM_ID = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
TOKEN_PROGRAMS = (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)
PROGRAM_NAMES = {TOKEN_PROGRAM_ID: "spl-token", TOKEN_2022_PROGRAM_ID: "spl-token-2022"}

ACCOUNT_LEN = 165
MINT_LEN = 82
MULTISIG_LEN = 355
_ACCOUNT_TYPE_MINT = 1
_ACCOUNT_TYPE_ACCOUNT = 2

_STATE_NAMES = {0: "uninitialized", 1: "initialized", 2: "frozen"}


def real_number_string_trimmed(amount: int, decimals: int) -> str:
    """Agave's ``real_number_string_trimmed``: ``1000, 6 -> "0.001"``, ``5_000_000, 6 -> "5"``."""
    if decimals == 0:
        return str(amount)
    s = str(amount).rjust(decimals + 1, "0")
    s = s[:-decimals] + "." + s[-decimals:]
    return s.rstrip("0").rstrip(".")


def ui_token_amount(amount: int, decimals: int) -> UiTokenAmount:
    return UiTokenAmount(amount / (10.0**decimals), decimals, str(amount), real_number_string_trimmed(amount, decimals))


def ui_token_amount_json(amount: int, decimals: int) -> dict[str, Any]:
    return {
        "amount": str(amount),
        "decimals": decimals,
        "uiAmount": amount / (10.0**decimals),
        "uiAmountString": real_number_string_trimmed(amount, decimals),
    }


def is_token_account(owner: Pubkey, data: bytes) -> bool:
    if owner == TOKEN_PROGRAM_ID:
        return len(data) == ACCOUNT_LEN
    if owner == TOKEN_2022_PROGRAM_ID:
        return len(data) == ACCOUNT_LEN or (len(data) > ACCOUNT_LEN and data[ACCOUNT_LEN] == _ACCOUNT_TYPE_ACCOUNT)
    return False


def is_mint(owner: Pubkey, data: bytes) -> bool:
    if owner == TOKEN_PROGRAM_ID:
        return len(data) == MINT_LEN
    if owner == TOKEN_2022_PROGRAM_ID:
        return len(data) == MINT_LEN or (len(data) > ACCOUNT_LEN and data[ACCOUNT_LEN] == _ACCOUNT_TYPE_MINT)
    return False


def decode_token_account(owner: Pubkey, data: bytes) -> TokenAccount | None:
    if not is_token_account(owner, data):
        return None
    try:
        account = TokenAccount.from_bytes(bytes(data[:ACCOUNT_LEN]))
    except Exception:
        return None
    if account.state == TokenAccountState.Uninitialized:
        return None
    return account


def decode_mint(owner: Pubkey, data: bytes) -> Mint | None:
    if not is_mint(owner, data):
        return None
    try:
        mint = Mint.from_bytes(bytes(data[:MINT_LEN]))
    except Exception:
        return None
    return mint if mint.is_initialized else None


def _opt(pk: Pubkey | None) -> str | None:
    return None if pk is None else str(pk)


def _extensions(data: bytes) -> list[dict[str, Any]]:
    """Token-2022 TLV extensions, the simple ones decoded, the rest as ``unparseableExtension``."""
    out: list[dict[str, Any]] = []
    offset = ACCOUNT_LEN + 1
    while offset + 4 <= len(data):
        ext_type, length = struct.unpack_from("<HH", data, offset)
        value = data[offset + 4 : offset + 4 + length]
        offset += 4 + length
        if ext_type == 0:  # Uninitialized: padding
            break
        out.append(_extension(ext_type, value))
    return out


def _pubkey_or_none(raw: bytes) -> str | None:
    return None if raw == bytes(32) else str(Pubkey.from_bytes(raw))


def _extension(ext_type: int, value: bytes) -> dict[str, Any]:
    try:
        if ext_type == 2:
            return {"extension": "transferFeeAmount", "state": {"withheldAmount": struct.unpack("<Q", value[:8])[0]}}
        if ext_type == 3:
            return {"extension": "mintCloseAuthority", "state": {"closeAuthority": _pubkey_or_none(value[:32])}}
        if ext_type == 6:
            return {"extension": "defaultAccountState", "state": {"accountState": _STATE_NAMES[value[0]]}}
        if ext_type == 7:
            return {"extension": "immutableOwner"}
        if ext_type == 8:
            return {"extension": "memoTransfer", "state": {"requireIncomingTransferMemos": bool(value[0])}}
        if ext_type == 9:
            return {"extension": "nonTransferable"}
        if ext_type == 11:
            return {"extension": "cpiGuard", "state": {"lockCpi": bool(value[0])}}
        if ext_type == 12:
            return {"extension": "permanentDelegate", "state": {"delegate": _pubkey_or_none(value[:32])}}
        if ext_type == 13:
            return {"extension": "nonTransferableAccount"}
        if ext_type == 15:
            return {"extension": "transferHookAccount", "state": {"transferring": bool(value[0])}}
        if ext_type == 27:
            return {"extension": "pausableAccount"}
    except (IndexError, KeyError, struct.error, ValueError):
        pass
    return {"extension": "unparseableExtension"}


def parse_token_program_account(owner: Pubkey, data: bytes, mint_decimals: Any) -> dict[str, Any] | None:
    """``{"program", "parsed", "space"}`` for a token account or mint, else ``None`` (caller falls back to base64).

    ``mint_decimals(mint_pubkey) -> int | None`` looks up the decimals of a token account's mint.
    """
    if owner not in TOKEN_PROGRAMS:
        return None
    program = PROGRAM_NAMES[owner]
    account = decode_token_account(owner, data)
    if account is not None:
        decimals = mint_decimals(account.mint)
        if decimals is None:
            return None  # Agave cannot parse a token account whose mint is missing
        info: dict[str, Any] = {
            "isNative": account.is_native is not None,
            "mint": str(account.mint),
            "owner": str(account.owner),
            "state": _STATE_NAMES[int(account.state)],
            "tokenAmount": ui_token_amount_json(account.amount, decimals),
        }
        if account.delegate is not None:
            info["delegate"] = str(account.delegate)
            info["delegatedAmount"] = ui_token_amount_json(account.delegated_amount, decimals)
        if account.is_native is not None:
            info["rentExemptReserve"] = ui_token_amount_json(account.is_native, decimals)
        if account.close_authority is not None:
            info["closeAuthority"] = str(account.close_authority)
        if owner == TOKEN_2022_PROGRAM_ID and len(data) > ACCOUNT_LEN:
            info["extensions"] = _extensions(data)
        return {"program": program, "parsed": {"info": info, "type": "account"}, "space": len(data)}
    mint = decode_mint(owner, data)
    if mint is not None:
        info = {
            "decimals": mint.decimals,
            "freezeAuthority": _opt(mint.freeze_authority),
            "isInitialized": mint.is_initialized,
            "mintAuthority": _opt(mint.mint_authority),
            "supply": str(mint.supply),
        }
        if owner == TOKEN_2022_PROGRAM_ID and len(data) > ACCOUNT_LEN:
            info["extensions"] = _extensions(data)
        return {"program": program, "parsed": {"info": info, "type": "mint"}, "space": len(data)}
    return None
