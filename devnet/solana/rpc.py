"""JSON-RPC method handlers: Agave's parameter rules and error texts, results built with solders' response types."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from solders.account import Account, AccountJSON
from solders.account_decoder import ParsedAccount
from solders.epoch_info import EpochInfo
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import MessageV0, from_bytes_versioned
from solders.pubkey import Pubkey
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.rpc.responses import (
    GetBalanceResp,
    GetBlockHeightResp,
    GetEpochInfoResp,
    GetEpochScheduleResp,
    GetFeeForMessageResp,
    GetGenesisHashResp,
    GetHealthResp,
    GetIdentityResp,
    GetLatestBlockhashResp,
    GetMinimumBalanceForRentExemptionResp,
    GetRecentPrioritizationFeesResp,
    GetSignaturesForAddressResp,
    GetSignatureStatusesResp,
    GetSlotResp,
    GetTokenAccountBalanceResp,
    GetTokenSupplyResp,
    GetTransactionCountResp,
    GetTransactionResp,
    GetVersionResp,
    IsBlockhashValidResp,
    RequestAirdropResp,
    RpcBlockhash,
    RpcConfirmedTransactionStatusWithSignature,
    RpcIdentity,
    RpcKeyedAccount,
    RpcKeyedAccountJsonParsed,
    RpcPrioritizationFee,
    RpcResponseContext,
    RpcSimulateTransactionResult,
    RpcVersionInfo,
    SendTransactionResp,
    SimulateTransactionResp,
)
from solders.signature import Signature
from solders.transaction import Legacy, VersionedTransaction
from solders.transaction_status import (
    EncodedConfirmedTransactionWithStatusMeta,
    EncodedTransactionWithStatusMeta,
    ParsedAccountSource,
    TransactionConfirmationStatus,
    TransactionStatus,
    UiAddressTableLookup,
    UiCompiledInstruction,
    UiInnerInstructions,
    UiLoadedAddresses,
    UiParsedMessage,
    UiPartiallyDecodedInstruction,
    UiRawMessage,
    UiTransaction,
    UiTransactionStatusMeta,
)
from solders.transaction_status import (
    ParsedAccount as ParsedAccountTxStatus,
)

from . import errors
from .codec import b58decode, b58encode, b64decode, b64encode, zstd_frame
from .errors import RpcError, invalid_params, tx_error_display, tx_error_json
from .ledger import COMMITMENTS, Bank, LandedTx, Ledger, SimOutcome, replace_blockhash
from .tokens import TOKEN_PROGRAMS, decode_mint, decode_token_account, parse_token_program_account, ui_token_amount

SOLANA_CORE_VERSION = "2.2.0"
FEATURE_SET = 3294202862
API_VERSION = SOLANA_CORE_VERSION

PACKET_DATA_SIZE = 1232
MAX_BASE58_SIZE = 1683
MAX_BASE64_SIZE = 1644
MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS = 256
MAX_MULTIPLE_ACCOUNTS = 100
MAX_TX_ACCOUNT_LOCKS = 128
MAX_GET_CONFIRMED_SIGNATURES_FOR_ADDRESS2_LIMIT = 1000
MAX_BASE58_BYTES = 128
RENT_EXEMPT_RENT_EPOCH = 2**64 - 1
_SANITIZE_FAILURE = "Transaction failed to sanitize accounts offsets correctly"
_TX_TYPE = "solana_transaction::versioned::VersionedTransaction"
_MSG_TYPE = "solana_message::versioned::VersionedMessage"
_TX_ENCODINGS = ("binary", "base64", "base58", "json", "jsonParsed")
_ACCOUNT_ENCODINGS = ("binary", "base58", "base64", "jsonParsed", "base64+zstd")
_CONFIRMATION = {
    "processed": TransactionConfirmationStatus.Processed,
    "confirmed": TransactionConfirmationStatus.Confirmed,
    "finalized": TransactionConfirmationStatus.Finalized,
}


class Ticker(Protocol):
    """What ``devnet_setAutoTick`` drives (the server's slot clock)."""

    enabled: bool
    slot_ms: int

    def configure(self, enabled: bool, slot_ms: int | None) -> None: ...


# ------------------------------------------------------------------ params
def _desc(value: Any) -> str:
    """serde's description of an unexpected JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f'string "{value}"'
    if isinstance(value, list):
        return "sequence"
    return "map"


def _type_error(value: Any, expected: str) -> RpcError:
    return invalid_params(f"Invalid params: invalid type: {_desc(value)}, expected {expected}.")


def _positional(params: Any, required: int) -> list[Any]:
    if params is None:
        params = []
    if not isinstance(params, list):
        raise _type_error(params, "a sequence")
    if len(params) < required:
        raise invalid_params(f"`params` should have at least {required} argument(s)")
    return params


def _arg(params: list[Any], index: int) -> Any:
    return params[index] if index < len(params) else None


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(value, "a string")
    return value


def _u64(value: Any, what: str = "u64") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(value, what)
    if value < 0:
        raise invalid_params(f"Invalid params: invalid value: integer `{value}`, expected {what}.")
    return value


def _opt_u64(value: Any) -> int | None:
    return None if value is None else _u64(value)


def _bool(value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(value, "a boolean")
    return value


def _config(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(value, "a config object")
    return value


def _decode_b58_key(text: Any, size: int, max_len: int) -> bytes:
    text = _string(text)
    if len(text) > max_len:
        raise invalid_params("Invalid param: WrongSize")
    try:
        raw = b58decode(text)
    except ValueError:
        raise invalid_params("Invalid param: Invalid") from None
    if len(raw) != size:
        raise invalid_params("Invalid param: WrongSize")
    return raw


def _pubkey(text: Any) -> Pubkey:
    return Pubkey.from_bytes(_decode_b58_key(text, 32, 44))


def _signature(text: Any) -> Signature:
    return Signature.from_bytes(_decode_b58_key(text, 64, 88))


def _hash(text: Any) -> Hash:
    return Hash(_decode_b58_key(text, 32, 44))


def _variant(value: Any, allowed: tuple[str, ...], default: str) -> str:
    if value is None:
        return default
    value = _string(value)
    if value not in allowed:
        expected = ", ".join(f"`{v}`" for v in allowed)
        raise invalid_params(f"Invalid params: unknown variant `{value}`, expected one of {expected}.")
    return value


def _commitment(cfg: dict[str, Any], key: str = "commitment") -> str:
    return _variant(cfg.get(key), COMMITMENTS, "finalized")


def _data_slice(cfg: dict[str, Any]) -> tuple[int, int] | None:
    raw = cfg.get("dataSlice")
    if raw is None:
        return None
    raw = _config(raw)
    return _u64(raw.get("offset"), "usize"), _u64(raw.get("length"), "usize")


# ----------------------------------------------------------------- handler
class SolanaRpc:
    """Method table over a :class:`Ledger`. ``call`` returns the JSON ``result`` or raises :class:`RpcError`."""

    def __init__(self, ledger: Ledger, ticker: Ticker | None = None) -> None:
        self.ledger = ledger
        self.ticker = ticker
        self.identity = Keypair().pubkey()
        self._methods: dict[str, Callable[[Any], Any]] = {
            "getAccountInfo": self.get_account_info,
            "getBalance": self.get_balance,
            "getBlockHeight": self.get_block_height,
            "getEpochInfo": self.get_epoch_info,
            "getEpochSchedule": self.get_epoch_schedule,
            "getFeeForMessage": self.get_fee_for_message,
            "getGenesisHash": self.get_genesis_hash,
            "getHealth": self.get_health,
            "getIdentity": self.get_identity,
            "getLatestBlockhash": self.get_latest_blockhash,
            "getMinimumBalanceForRentExemption": self.get_minimum_balance_for_rent_exemption,
            "getMultipleAccounts": self.get_multiple_accounts,
            "getRecentPrioritizationFees": self.get_recent_prioritization_fees,
            "getSignatureStatuses": self.get_signature_statuses,
            "getSignaturesForAddress": self.get_signatures_for_address,
            "getSlot": self.get_slot,
            "getTokenAccountBalance": self.get_token_account_balance,
            "getTokenAccountsByOwner": self.get_token_accounts_by_owner,
            "getTokenSupply": self.get_token_supply,
            "getTransaction": self.get_transaction,
            "getTransactionCount": self.get_transaction_count,
            "getVersion": self.get_version,
            "isBlockhashValid": self.is_blockhash_valid,
            "requestAirdrop": self.request_airdrop,
            "sendTransaction": self.send_transaction,
            "simulateTransaction": self.simulate_transaction,
            "devnet_advanceSlots": self.devnet_advance_slots,
            "devnet_expireBlockhashes": self.devnet_expire_blockhashes,
            "devnet_setAutoTick": self.devnet_set_auto_tick,
            "devnet_dropNextSends": self.devnet_drop_next_sends,
            "devnet_holdSends": self.devnet_hold_sends,
            "devnet_releaseSends": self.devnet_release_sends,
            "devnet_setAccount": self.devnet_set_account,
            "devnet_getState": self.devnet_get_state,
        }

    @property
    def methods(self) -> list[str]:
        return sorted(self._methods)

    def call(self, method: str, params: Any) -> Any:
        handler = self._methods.get(method)
        if handler is None:
            raise RpcError(errors.METHOD_NOT_FOUND, "Method not found")
        return handler(params)

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _result(resp: Any) -> Any:
        return json.loads(resp.to_json())["result"]

    @staticmethod
    def _ctx(bank: Bank) -> RpcResponseContext:
        return RpcResponseContext(bank.slot, api_version=API_VERSION)

    def _bank(self, cfg: dict[str, Any]) -> Bank:
        """The bank ``cfg["commitment"]`` names (default finalized), checked against ``minContextSlot``."""
        bank = self.ledger.bank(_commitment(cfg))
        min_context_slot = _opt_u64(cfg.get("minContextSlot"))
        if min_context_slot is not None and bank.slot < min_context_slot:
            raise errors.min_context_slot_not_reached(bank.slot)
        return bank

    def _fix_account_meta(self, out: dict[str, Any], account: Account, data: bytes) -> None:
        """Fields solders leaves unset: ``space``; rent-exempt accounts carry rentEpoch u64::MAX as on Agave."""
        out["space"] = len(data)
        if account.lamports >= self.ledger.svm.minimum_balance_for_rent_exemption(len(data)):
            out["rentEpoch"] = RENT_EXEMPT_RENT_EPOCH

    def _ui_account(self, account: Account, encoding: str, data_slice: tuple[int, int] | None) -> dict[str, Any]:
        """One account in Agave's UiAccount shape (solders' serialization, then the encoding applied)."""
        data = bytes(account.data)
        if encoding == "jsonParsed":
            parsed = parse_token_program_account(account.owner, data, self.ledger.mint_decimals)
            if parsed is not None:
                ui = AccountJSON(
                    account.lamports,
                    ParsedAccount(parsed["program"], parsed["parsed"], parsed["space"]),
                    account.owner,
                    account.executable,
                    account.rent_epoch,
                )
                out = json.loads(RpcKeyedAccountJsonParsed(Pubkey.default(), ui).to_json())["account"]
                self._fix_account_meta(out, account, data)
                return out
            encoding = "base64"  # Agave falls back to base64 for accounts it cannot parse
        out = json.loads(RpcKeyedAccount(Pubkey.default(), account).to_json())["account"]
        self._fix_account_meta(out, account, data)
        if data_slice is not None:
            offset, length = data_slice
            data = data[offset : offset + length]
        if encoding in ("binary", "base58") and len(data) > MAX_BASE58_BYTES:
            raise invalid_params("Encoded binary (base 58) data should be less than 128 bytes, please use Base64 encoding.")
        if encoding == "binary":
            out["data"] = b58encode(data)
        elif encoding == "base58":
            out["data"] = [b58encode(data), "base58"]
        elif encoding == "base64+zstd":
            out["data"] = [b64encode(zstd_frame(data)), "base64+zstd"]
        else:
            out["data"] = [b64encode(data), "base64"]
        return out

    def _context_value(self, bank: Bank, value: Any) -> dict[str, Any]:
        return {"context": json.loads(self._ctx(bank).to_json()), "value": value}

    def _decode_tx(self, data: Any, encoding: str) -> VersionedTransaction:
        data = _string(data)
        if encoding in ("json", "jsonParsed"):
            raise invalid_params(f"unsupported encoding: {encoding}. Supported encodings: base58, base64")
        raw = self._decode_binary(data, encoding, _TX_TYPE)
        try:
            tx = VersionedTransaction.from_bytes(raw)
        except ValueError as exc:
            raise invalid_params(f"failed to deserialize {_TX_TYPE}: {exc}") from None
        try:
            tx.sanitize()
        except Exception:
            raise invalid_params(f"invalid transaction: {_SANITIZE_FAILURE}") from None
        return tx

    @staticmethod
    def _decode_binary(data: str, encoding: str, type_name: str) -> bytes:
        if encoding == "base64":
            if len(data) > MAX_BASE64_SIZE:
                raise invalid_params(
                    f"base64 encoded {type_name} too large: {len(data)} bytes (max: encoded/raw {MAX_BASE64_SIZE}/{PACKET_DATA_SIZE})"
                )
            try:
                raw = b64decode(data)
            except ValueError as exc:
                raise invalid_params(f"invalid base64 encoding: {exc}") from None
        else:
            if len(data) > MAX_BASE58_SIZE:
                raise invalid_params(
                    f"base58 encoded {type_name} too large: {len(data)} bytes (max: encoded/raw {MAX_BASE58_SIZE}/{PACKET_DATA_SIZE})"
                )
            try:
                raw = b58decode(data)
            except ValueError as exc:
                raise invalid_params(f"invalid base58 encoding: {exc}") from None
        if len(raw) > PACKET_DATA_SIZE:
            raise invalid_params(f"decoded {type_name} too large: {len(raw)} bytes (max: {PACKET_DATA_SIZE} bytes)")
        return raw

    @staticmethod
    def _sim_result(outcome: SimOutcome, **extra: Any) -> RpcSimulateTransactionResult:
        return_data = outcome.return_data
        if return_data is not None and not bytes(return_data.data):
            return_data = None
        return RpcSimulateTransactionResult(
            err=outcome.err,
            logs=outcome.logs,
            units_consumed=outcome.units_consumed,
            return_data=return_data,
            **extra,
        )

    def _preflight_failure(self, outcome: SimOutcome) -> RpcError:
        message = f"Transaction simulation failed: {tx_error_display(tx_error_json(outcome.err))}"
        failure = SendTransactionPreflightFailureMessage(message, self._sim_result(outcome))
        return RpcError(errors.SEND_TRANSACTION_PREFLIGHT_FAILURE, message, json.loads(failure.to_json())["data"])

    @staticmethod
    def _ui_inner(inner: list[Any], parsed_keys: list[Pubkey] | None) -> list[UiInnerInstructions]:
        out = []
        for index, instructions in enumerate(inner):
            if not instructions:
                continue
            converted = []
            for item in instructions:
                ix = item.instruction()
                stack_height = item.stack_height()
                data = b58encode(bytes(ix.data))
                if parsed_keys is None:
                    converted.append(UiCompiledInstruction(ix.program_id_index, bytes(ix.accounts), data, stack_height))
                else:
                    converted.append(
                        UiPartiallyDecodedInstruction(
                            parsed_keys[ix.program_id_index],
                            [parsed_keys[i] for i in bytes(ix.accounts)],
                            data,
                            stack_height,
                        )
                    )
            out.append(UiInnerInstructions(index, converted))
        return out

    # ------------------------------------------------------------- cluster
    def get_health(self, params: Any) -> Any:
        return self._result(GetHealthResp("ok"))

    def get_version(self, params: Any) -> Any:
        return self._result(GetVersionResp(RpcVersionInfo(SOLANA_CORE_VERSION, FEATURE_SET)))

    def get_genesis_hash(self, params: Any) -> Any:
        return self._result(GetGenesisHashResp(self.ledger.genesis_hash))

    def get_identity(self, params: Any) -> Any:
        return self._result(GetIdentityResp(RpcIdentity(self.identity)))

    def get_epoch_schedule(self, params: Any) -> Any:
        return self._result(GetEpochScheduleResp(self.ledger.svm.get_epoch_schedule()))

    def get_slot(self, params: Any) -> Any:
        cfg = _config(_arg(_positional(params, 0), 0))
        return self._result(GetSlotResp(self._bank(cfg).slot))

    def get_block_height(self, params: Any) -> Any:
        cfg = _config(_arg(_positional(params, 0), 0))
        return self._result(GetBlockHeightResp(self._bank(cfg).block_height))

    def get_transaction_count(self, params: Any) -> Any:
        cfg = _config(_arg(_positional(params, 0), 0))
        self._bank(cfg)
        return self._result(GetTransactionCountResp(self.ledger.transaction_count))

    def get_epoch_info(self, params: Any) -> Any:
        cfg = _config(_arg(_positional(params, 0), 0))
        bank = self._bank(cfg)
        schedule = self.ledger.svm.get_epoch_schedule()
        epoch, index = schedule.get_epoch_and_slot_index(bank.slot)
        slots_in_epoch = schedule.get_slots_in_epoch(epoch)
        info = EpochInfo(epoch, index, slots_in_epoch, bank.slot, bank.block_height, self.ledger.transaction_count)
        return self._result(GetEpochInfoResp(info))

    def get_latest_blockhash(self, params: Any) -> Any:
        cfg = _config(_arg(_positional(params, 0), 0))
        bank = self._bank(cfg)
        blockhash, last_valid = self.ledger.latest_blockhash(bank)
        return self._result(GetLatestBlockhashResp(RpcBlockhash(blockhash, last_valid), self._ctx(bank)))

    def is_blockhash_valid(self, params: Any) -> Any:
        p = _positional(params, 1)
        blockhash = _hash(p[0])
        bank = self._bank(_config(_arg(p, 1)))
        return self._result(IsBlockhashValidResp(self.ledger.blockhash_valid(blockhash, bank), self._ctx(bank)))

    def get_minimum_balance_for_rent_exemption(self, params: Any) -> Any:
        p = _positional(params, 1)
        size = _u64(p[0], "usize")
        self._bank(_config(_arg(p, 1)))
        lamports = self.ledger.svm.minimum_balance_for_rent_exemption(size)  # from the SVM's Rent sysvar
        return self._result(GetMinimumBalanceForRentExemptionResp(lamports))

    def get_fee_for_message(self, params: Any) -> Any:
        p = _positional(params, 1)
        raw = self._decode_binary(_string(p[0]), "base64", _MSG_TYPE)
        try:
            message = from_bytes_versioned(raw)
        except ValueError as exc:
            raise invalid_params(f"failed to deserialize {_MSG_TYPE}: {exc}") from None
        sanitize = getattr(message, "sanitize", None)
        if sanitize is not None:
            try:
                sanitize()
            except Exception:
                raise invalid_params(f"invalid transaction message: {_SANITIZE_FAILURE}") from None
        bank = self._bank(_config(_arg(p, 1)))
        fee = None  # null when the blockhash is unknown or expired for this bank, as on Agave
        if self.ledger.blockhash_valid(message.recent_blockhash, bank):
            fee = self.ledger.fee_for_message(message)
        return self._result(GetFeeForMessageResp(fee, self._ctx(bank)))

    def get_recent_prioritization_fees(self, params: Any) -> Any:
        p = _positional(params, 0)
        raw = _arg(p, 0)
        if raw is None:
            raw = []
        if not isinstance(raw, list):
            raise _type_error(raw, "a sequence")
        if len(raw) > MAX_TX_ACCOUNT_LOCKS:
            raise invalid_params(f"Too many inputs provided; max {MAX_TX_ACCOUNT_LOCKS}")
        accounts = [_pubkey(a) for a in raw]
        fees = [RpcPrioritizationFee(slot, fee) for slot, fee in self.ledger.recent_prioritization_fees(accounts)]
        return self._result(GetRecentPrioritizationFeesResp(fees))

    # ------------------------------------------------------------ accounts
    def get_balance(self, params: Any) -> Any:
        p = _positional(params, 1)
        pubkey = _pubkey(p[0])
        bank = self._bank(_config(_arg(p, 1)))
        return self._result(GetBalanceResp(self.ledger.lamports(pubkey), self._ctx(bank)))

    def get_account_info(self, params: Any) -> Any:
        p = _positional(params, 1)
        pubkey = _pubkey(p[0])
        cfg = _config(_arg(p, 1))
        encoding = _variant(cfg.get("encoding"), _ACCOUNT_ENCODINGS, "binary")
        data_slice = _data_slice(cfg)
        bank = self._bank(cfg)
        account = self.ledger.account(pubkey)
        value = None if account is None else self._ui_account(account, encoding, data_slice)
        return self._context_value(bank, value)

    def get_multiple_accounts(self, params: Any) -> Any:
        p = _positional(params, 1)
        if not isinstance(p[0], list):
            raise _type_error(p[0], "a sequence")
        if len(p[0]) > MAX_MULTIPLE_ACCOUNTS:
            raise invalid_params(f"Too many inputs provided; max {MAX_MULTIPLE_ACCOUNTS}")
        pubkeys = [_pubkey(k) for k in p[0]]
        cfg = _config(_arg(p, 1))
        encoding = _variant(cfg.get("encoding"), _ACCOUNT_ENCODINGS, "base64")
        data_slice = _data_slice(cfg)
        bank = self._bank(cfg)
        values = []
        for pubkey in pubkeys:
            account = self.ledger.account(pubkey)
            values.append(None if account is None else self._ui_account(account, encoding, data_slice))
        return self._context_value(bank, values)

    # --------------------------------------------------------------- tokens
    def get_token_account_balance(self, params: Any) -> Any:
        p = _positional(params, 1)
        pubkey = _pubkey(p[0])
        bank = self._bank(_config(_arg(p, 1)))
        account = self.ledger.account(pubkey)
        if account is None:
            raise invalid_params("Invalid param: could not find account")
        if account.owner not in TOKEN_PROGRAMS:
            raise invalid_params("Invalid param: not a Token account")
        token = decode_token_account(account.owner, bytes(account.data))
        if token is None:
            raise invalid_params("Invalid param: not a Token account")
        decimals = self._mint_decimals_or_error(token.mint)
        return self._result(GetTokenAccountBalanceResp(ui_token_amount(token.amount, decimals), self._ctx(bank)))

    def _mint_decimals_or_error(self, mint: Pubkey) -> int:
        account = self.ledger.account(mint)
        if account is None:
            raise invalid_params("Invalid param: could not find mint")
        decoded = decode_mint(account.owner, bytes(account.data))
        if decoded is None:
            raise invalid_params("Invalid param: not a Token mint")
        return decoded.decimals

    def get_token_supply(self, params: Any) -> Any:
        p = _positional(params, 1)
        pubkey = _pubkey(p[0])
        bank = self._bank(_config(_arg(p, 1)))
        account = self.ledger.account(pubkey)
        if account is None:
            raise invalid_params("Invalid param: could not find account")
        mint = decode_mint(account.owner, bytes(account.data))
        if mint is None:
            raise invalid_params("Invalid param: not a Token mint")
        return self._result(GetTokenSupplyResp(ui_token_amount(mint.supply, mint.decimals), self._ctx(bank)))

    def get_token_accounts_by_owner(self, params: Any) -> Any:
        p = _positional(params, 2)
        owner = _pubkey(p[0])
        token_filter = _config(p[1])
        cfg = _config(_arg(p, 2))
        mint: Pubkey | None = None
        if "mint" in token_filter:
            mint = _pubkey(token_filter["mint"])
            mint_account = self.ledger.account(mint)
            if mint_account is None:
                raise invalid_params("Invalid param: could not find mint")
            if mint_account.owner not in TOKEN_PROGRAMS:
                raise invalid_params("Invalid param: not a Token mint")
            program_id = mint_account.owner
        elif "programId" in token_filter:
            program_id = _pubkey(token_filter["programId"])
            if program_id not in TOKEN_PROGRAMS:
                raise invalid_params("Invalid param: unrecognized Token program id")
        else:
            raise invalid_params("Invalid params: data did not match any variant of untagged enum RpcTokenAccountsFilter.")
        encoding = _variant(cfg.get("encoding"), _ACCOUNT_ENCODINGS, "binary")
        data_slice = _data_slice(cfg)
        bank = self._bank(cfg)
        values = []
        for pubkey, account in sorted(self.ledger.svm.get_program_accounts(program_id), key=lambda kv: bytes(kv[0])):
            token = decode_token_account(account.owner, bytes(account.data))
            if token is None or token.owner != owner or (mint is not None and token.mint != mint):
                continue
            values.append({"pubkey": str(pubkey), "account": self._ui_account(account, encoding, data_slice)})
        return self._context_value(bank, values)

    # --------------------------------------------------------- transactions
    def request_airdrop(self, params: Any) -> Any:
        p = _positional(params, 2)
        pubkey = _pubkey(p[0])
        lamports = _u64(p[1])
        self._bank(_config(_arg(p, 2)))
        return self._result(RequestAirdropResp(self.ledger.airdrop(pubkey, lamports)))

    def send_transaction(self, params: Any) -> Any:
        p = _positional(params, 1)
        cfg = _config(_arg(p, 1))
        skip_preflight = _bool(cfg.get("skipPreflight"))
        encoding = _variant(cfg.get("encoding"), _TX_ENCODINGS, "base58")
        _opt_u64(cfg.get("maxRetries"))  # accepted; this devnet delivers once (or drops, see devnet_dropNextSends)
        tx = self._decode_tx(p[0], encoding)
        # the preflight bank; with skipPreflight the node uses its processed bank (minContextSlot still applies)
        commitment = "processed" if skip_preflight else _commitment(cfg, "preflightCommitment")
        bank = self._bank({**cfg, "commitment": commitment})
        if not skip_preflight:
            if not all(tx.verify_with_results()):
                raise errors.signature_verification_failure()
            err = self.ledger.check_age_and_status(tx, bank)
            if err is not None:
                raise self._preflight_failure(SimOutcome(err, [], 0))
            # Landed after the preflight bank (e.g. not yet finalized): that bank cannot see it, so the real RPC
            # simulates it as new and forwards it; the leader then drops the duplicate.
            if tx.signatures[0] not in self.ledger.landed:
                outcome = self.ledger.simulate(tx, sigverify=True, bank=bank)
                if outcome.err is not None:
                    raise self._preflight_failure(outcome)
        self.ledger.submit(tx)
        return self._result(SendTransactionResp(tx.signatures[0]))

    def simulate_transaction(self, params: Any) -> Any:
        p = _positional(params, 1)
        cfg = _config(_arg(p, 1))
        sig_verify = _bool(cfg.get("sigVerify"))
        replace = _bool(cfg.get("replaceRecentBlockhash"))
        if sig_verify and replace:
            raise invalid_params("sigVerify may not be used with replaceRecentBlockhash")
        encoding = _variant(cfg.get("encoding"), _TX_ENCODINGS, "base58")
        tx = self._decode_tx(p[0], encoding)
        bank = self._bank(cfg)
        if sig_verify and not all(tx.verify_with_results()):
            raise errors.signature_verification_failure()
        replacement = None
        if replace:
            blockhash, last_valid = self.ledger.latest_blockhash(bank)
            tx = replace_blockhash(tx, blockhash)
            replacement = RpcBlockhash(blockhash, last_valid)
        accounts_cfg = cfg.get("accounts")
        addresses: list[Pubkey] | None = None
        accounts_encoding = "base64"
        if accounts_cfg is not None:
            accounts_cfg = _config(accounts_cfg)
            accounts_encoding = _variant(accounts_cfg.get("encoding"), _ACCOUNT_ENCODINGS, "base64")
            if accounts_encoding in ("binary", "base58"):
                raise invalid_params("base58 encoding not supported")
            raw_addresses = accounts_cfg.get("addresses") or []
            if not isinstance(raw_addresses, list):
                raise _type_error(raw_addresses, "a sequence")
            n_keys = len(self.ledger.resolve_keys(tx)[0])
            if len(raw_addresses) > n_keys:
                raise invalid_params(f"Too many accounts provided; max {n_keys}")
            addresses = [_pubkey(a) for a in raw_addresses]
        outcome = self.ledger.simulate(tx, sigverify=sig_verify, bank=bank)
        inner = None
        if _bool(cfg.get("innerInstructions")):
            inner = self._ui_inner(outcome.inner_instructions or [], None)
        result = self._sim_result(outcome, inner_instructions=inner, replacement_blockhash=replacement, fee=outcome.fee)
        out = self._result(SimulateTransactionResp(result, self._ctx(bank)))
        if addresses is not None:
            out["value"]["accounts"] = [
                None if outcome.post_accounts.get(a) is None else self._ui_account(outcome.post_accounts[a], accounts_encoding, None)
                for a in addresses
            ]
        return out

    def get_signature_statuses(self, params: Any) -> Any:
        p = _positional(params, 1)
        if not isinstance(p[0], list):
            raise _type_error(p[0], "a sequence")
        if len(p[0]) > MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS:
            raise invalid_params(f"Too many inputs provided; max {MAX_GET_SIGNATURE_STATUSES_QUERY_ITEMS}")
        signatures = [_signature(s) for s in p[0]]
        search_history = _bool(_config(_arg(p, 1)).get("searchTransactionHistory"))
        ledger = self.ledger
        statuses = []
        for signature in signatures:
            landed = ledger.landed.get(signature)
            if landed is None or (not search_history and ledger.slot - landed.slot > 300):
                statuses.append(None)  # status cache covers ~300 slots; older needs searchTransactionHistory
                continue
            level = ledger.commitment_of(landed.slot)
            confirmations = None if level == "finalized" else ledger.slot - landed.slot
            statuses.append(TransactionStatus(landed.slot, confirmations, landed.err, landed.err, _CONFIRMATION[level]))
        return self._result(GetSignatureStatusesResp(statuses, self._ctx(ledger.bank("processed"))))

    def get_signatures_for_address(self, params: Any) -> Any:
        p = _positional(params, 1)
        address = _pubkey(p[0])
        cfg = _config(_arg(p, 1))
        limit = _opt_u64(cfg.get("limit"))
        if limit is None:
            limit = MAX_GET_CONFIRMED_SIGNATURES_FOR_ADDRESS2_LIMIT
        if limit == 0 or limit > MAX_GET_CONFIRMED_SIGNATURES_FOR_ADDRESS2_LIMIT:
            raise invalid_params(f"Invalid limit; max {MAX_GET_CONFIRMED_SIGNATURES_FOR_ADDRESS2_LIMIT}")
        before = None if cfg.get("before") is None else _signature(cfg["before"])
        until = None if cfg.get("until") is None else _signature(cfg["until"])
        commitment = _commitment(cfg)
        if commitment == "processed":
            raise invalid_params("Method does not support commitment below `confirmed`")
        self._bank(cfg)
        out = []
        started = before is None
        for signature in reversed(self.ledger.signatures_for_address(address)):
            if not started:
                started = signature == before
                continue
            if signature == until:
                break
            landed = self.ledger.landed[signature]
            if not self.ledger.visible(landed, commitment):
                continue
            out.append(
                RpcConfirmedTransactionStatusWithSignature(
                    signature,
                    landed.slot,
                    landed.err,
                    None,
                    landed.block_time,
                    _CONFIRMATION[self.ledger.commitment_of(landed.slot)],
                )
            )
            if len(out) >= limit:
                break
        return self._result(GetSignaturesForAddressResp(out))

    def get_transaction(self, params: Any) -> Any:
        p = _positional(params, 1)
        signature = _signature(p[0])
        raw_cfg = _arg(p, 1)
        cfg = {"encoding": raw_cfg} if isinstance(raw_cfg, str) else _config(raw_cfg)
        encoding = _variant(cfg.get("encoding"), _TX_ENCODINGS, "json")
        commitment = _commitment(cfg)
        if commitment == "processed":
            raise invalid_params("Method does not support commitment below `confirmed`")
        max_version = _opt_u64(cfg.get("maxSupportedTransactionVersion"))
        landed = self.ledger.landed.get(signature)
        if landed is None or not self.ledger.visible(landed, commitment):
            return None
        is_v0 = isinstance(landed.tx.message, MessageV0)
        if is_v0 and max_version is None:
            raise errors.unsupported_transaction_version(0)
        version: Any = 0 if is_v0 else (Legacy.Legacy if max_version is not None else None)
        parsed_keys = landed.account_keys if encoding == "jsonParsed" else None
        transaction: Any
        if encoding in ("json", "jsonParsed"):
            transaction = self._ui_transaction(landed, parsed=encoding == "jsonParsed")
        else:
            transaction = landed.tx
        return_data = landed.return_data
        if return_data is not None and not bytes(return_data.data):
            return_data = None
        meta = UiTransactionStatusMeta(
            landed.err,
            landed.fee,
            landed.pre_balances,
            landed.post_balances,
            inner_instructions=self._ui_inner(landed.inner_instructions, parsed_keys),
            log_messages=landed.logs,
            pre_token_balances=landed.pre_token_balances,
            post_token_balances=landed.post_token_balances,
            rewards=[],
            loaded_addresses=UiLoadedAddresses(landed.loaded_writable, landed.loaded_readonly),
            return_data=return_data,
            compute_units_consumed=landed.compute_units,
        )
        encoded = EncodedTransactionWithStatusMeta(transaction, meta, version)
        out = self._result(GetTransactionResp(EncodedConfirmedTransactionWithStatusMeta(landed.slot, encoded, landed.block_time)))
        raw = bytes(landed.tx)
        if encoding == "base58":
            out["transaction"] = [b58encode(raw), "base58"]
        elif encoding == "binary":
            out["transaction"] = b58encode(raw)
        return out

    def _ui_transaction(self, landed: LandedTx, *, parsed: bool) -> UiTransaction:
        tx = landed.tx
        message = tx.message
        lookups = None
        if isinstance(message, MessageV0):
            lookups = [
                UiAddressTableLookup(lk.account_key, bytes(lk.writable_indexes), bytes(lk.readonly_indexes)) for lk in message.address_table_lookups
            ]
        if not parsed:
            instructions = [
                UiCompiledInstruction(ix.program_id_index, bytes(ix.accounts), b58encode(bytes(ix.data)), None) for ix in message.instructions
            ]
            ui_message: Any = UiRawMessage(message.header, list(message.account_keys), message.recent_blockhash, instructions, lookups)
        else:
            keys = landed.account_keys
            writable = set(Ledger.writable_keys(tx, landed.loaded_writable))
            n_static = len(message.account_keys)
            n_signers = message.header.num_required_signatures
            account_keys = [
                ParsedAccountTxStatus(
                    key,
                    key in writable,
                    i < n_signers,
                    ParsedAccountSource.Transaction if i < n_static else ParsedAccountSource.LookupTable,
                )
                for i, key in enumerate(keys)
            ]
            instructions = [
                UiPartiallyDecodedInstruction(keys[ix.program_id_index], [keys[i] for i in bytes(ix.accounts)], b58encode(bytes(ix.data)), None)
                for ix in message.instructions
            ]
            ui_message = UiParsedMessage(account_keys, message.recent_blockhash, instructions, lookups)
        return UiTransaction(list(tx.signatures), ui_message)

    # ------------------------------------------------------------- devnet
    @staticmethod
    def _control_arg(params: Any, name: str) -> Any:
        if isinstance(params, dict):
            return params.get(name)
        if isinstance(params, list) and params:
            first = params[0]
            return first.get(name) if isinstance(first, dict) else first
        return None

    def devnet_get_state(self, params: Any = None) -> dict[str, Any]:
        ledger = self.ledger
        finalized = ledger.bank("finalized")
        return {
            "slot": ledger.slot,
            "blockHeight": ledger.block_height,
            "finalizedSlot": finalized.slot,
            "autoTick": bool(self.ticker and self.ticker.enabled),
            "slotMs": self.ticker.slot_ms if self.ticker else 0,
            "holdingSends": ledger.holding,
            "heldSends": [str(tx.signatures[0]) for tx in ledger.held],
            "dropNextSends": ledger.drop_next_sends,
            "lostSends": [str(s) for s in ledger.lost],
            "droppedByLeader": [{"signature": str(s), "reason": r} for s, r in ledger.dropped],
        }

    def devnet_advance_slots(self, params: Any) -> Any:
        count = self._control_arg(params, "count")
        count = 1 if count is None else _u64(count)
        self.ledger.advance(count)
        return self.devnet_get_state()

    def devnet_expire_blockhashes(self, params: Any) -> Any:
        self.ledger.expire_all_blockhashes()
        return self.devnet_get_state()

    def devnet_set_auto_tick(self, params: Any) -> Any:
        if self.ticker is None:
            raise RpcError(errors.INTERNAL_ERROR, "this devnet has no slot ticker")
        if isinstance(params, list) and params and not isinstance(params[0], dict):
            enabled, slot_ms = params[0], _arg(params, 1)  # positional: [enabled, slotMs?]
        else:
            enabled, slot_ms = self._control_arg(params, "enabled"), self._control_arg(params, "slotMs")
        self.ticker.configure(_bool(enabled), _opt_u64(slot_ms))
        return self.devnet_get_state()

    def devnet_drop_next_sends(self, params: Any) -> Any:
        count = self._control_arg(params, "count")
        self.ledger.drop_next_sends = 1 if count is None else _u64(count)
        return self.devnet_get_state()

    def devnet_hold_sends(self, params: Any) -> Any:
        self.ledger.holding = True
        return self.devnet_get_state()

    def devnet_release_sends(self, params: Any) -> Any:
        return [{"signature": str(sig), "landed": landed} for sig, landed in self.ledger.release_held()]

    def devnet_set_account(self, params: Any) -> Any:
        spec = params if isinstance(params, dict) else _config(_arg(_positional(params, 1), 0))
        pubkey = _pubkey(spec.get("pubkey"))
        data = b64decode(_string(spec.get("data") or ""))
        owner = _pubkey(spec.get("owner") or "11111111111111111111111111111111")
        account = Account(_u64(spec.get("lamports")), data, owner, _bool(spec.get("executable")), 2**64 - 1)
        self.ledger.set_account(pubkey, account)
        return self._context_value(self.ledger.bank("processed"), self._ui_account(account, "base64", None))
