"""Stellar family, over Horizon with stellar-sdk's ServerAsync (AiohttpClient).

The slot is (source account, sequence number). A transaction carries timebounds taken from
the network's clock (the latest closed ledger), never the local one, so "dead" is provable:
once a ledger closes after ``max_time`` without our hash, or the account's sequence moves past
ours without our hash, the attempt can never apply and may be signed anew (NOTES sections 1, 4).
Re-sending the identical envelope is always safe; ``tx_bad_seq`` alone proves nothing.

Amounts are stroops (7 decimals) everywhere; Horizon's decimal strings are parsed exactly.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import weakref
from datetime import datetime
from typing import Any, ClassVar, cast

from stellar_sdk import (
    Account,
    Asset,
    CreateAccount,
    HashMemo,
    IdMemo,
    Keypair,
    MuxedAccount,
    StrKey,
    TextMemo,
    TransactionBuilder,
    TransactionEnvelope,
)
from stellar_sdk import xdr as stellar_xdr
from stellar_sdk.client.aiohttp_client import AiohttpClient
from stellar_sdk.decorated_signature import DecoratedSignature
from stellar_sdk.exceptions import (
    BadRequestError,
    BadResponseError,
    BadSignatureError,
    BaseHorizonError,
    NotFoundError,
    SdkError,
    raise_request_exception,
)
from stellar_sdk.exceptions import (
    ConnectionError as HorizonConnectionError,
)
from stellar_sdk.server_async import ServerAsync  # not in stellar_sdk.__all__: imported from its module

from chains.base import (
    ChannelKey,
    DigestSigner,
    Funding,
    Memo,
    Movement,
    SignedTransfer,
    SigningRequest,
    SweepQuote,
    TransferIntent,
    TransferStatus,
    approve_before_signing,
)
from core.errors import (
    AlreadyFunded,
    BelowAccountMinimum,
    ChainUnavailable,
    FeeAboveCap,
    FeeTooLow,
    InsufficientFunds,
    InvalidAmount,
    InvalidMemo,
    InvalidRecipient,
    MemoRequired,
    NotAvailable,
    PermanentError,
    PolicyViolation,
    RecipientNoTrustline,
    SigningFailed,
    SubmissionFailed,
)
from core.money import to_decimal_string
from core.settings import AssetSpec, StellarChainSettings
from models.payloads import OnChainState
from signers.base import KeyScheme

log = logging.getLogger(__name__)

DECIMALS = 7
STROOPS_PER_XLM = 10**DECIMALS
UINT64_MAX = 2**64 - 1
MEMO_TEXT_MAX_BYTES = 28
OPS_PER_TRANSFER = 1
FEE_PERCENTILE = "p70"

# Rejected before application: nothing consumed.
_NOT_APPLIED_FUNDS_CODES = {"tx_insufficient_balance"}
_FUNDS_OP_CODES = {"op_underfunded", "op_low_reserve"}
_RECIPIENT_OP_CODES = {
    "op_no_trust": RecipientNoTrustline,
    "op_not_authorized": RecipientNoTrustline,
    "op_no_destination": InvalidRecipient,
    "op_line_full": InvalidRecipient,
    "op_already_exists": InvalidRecipient,
}


def parse_stroops(value: str) -> int:
    """Horizon's "123.4567890" (at most 7 decimals) as an exact integer of stroops."""
    text = str(value).strip()
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("+-").partition(".")
    if not whole.isdigit() or (fraction and not fraction.isdigit()) or len(fraction) > DECIMALS:
        raise ValueError(f"not a Stellar amount: {value!r}")
    units: int = int(whole) * STROOPS_PER_XLM + int(fraction.ljust(DECIMALS, "0") or "0")
    return -units if negative else units


def format_stroops(units: int) -> str:
    """Stroops as the decimal string stellar-sdk's operations take ("12.5000000")."""
    if units < 0:
        raise ValueError("negative amount")
    whole, fraction = divmod(units, STROOPS_PER_XLM)
    return f"{whole}.{fraction:07d}"


def _unix(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


def _result_codes(result_xdr: str | None) -> tuple[str, list[str]]:
    """(transaction code, operation codes) of a TransactionResult, in XDR enum names."""
    if not result_xdr:
        return "", []
    try:
        result = stellar_xdr.TransactionResult.from_xdr(result_xdr).result
    except Exception:  # noqa: BLE001 - only used for a human-readable detail
        return "", []
    ops: list[str] = []
    # A fee bump's outcome is its inner transaction's; the two result types share the fields read here.
    inner: Any = result
    if result.inner_result_pair is not None:
        inner = result.inner_result_pair.result.result
    for op in getattr(inner, "results", None) or []:
        if op.code != stellar_xdr.OperationResultCode.opINNER or op.tr is None:
            ops.append(op.code.name)
            continue
        name = op.code.name
        for attr, value in vars(op.tr).items():
            if attr != "type" and value is not None and hasattr(value, "code"):
                name = value.code.name
        ops.append(name)
    return inner.code.name, ops


def _tx_status(response: Any) -> str | None:
    """`tx_status` of an async submission's answer (None if the body is not that JSON)."""
    try:
        body = response.json()
    except ValueError:
        return None
    status = body.get("tx_status") if isinstance(body, dict) else None
    return str(status) if status is not None else None


def _close_later(loop: asyncio.AbstractEventLoop, server: ServerAsync) -> None:
    loop.create_task(server.close())


def _close_servers(servers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ServerAsync]) -> None:
    """Best effort, for adapters dropped without close(): close each loop's HTTP session."""
    for loop, server in list(servers.items()):
        try:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_close_later, loop, server)
                continue
            # The loop is gone (interpreter exit): its sockets are dead; drop the pool quietly.
            session = getattr(server._client, "_session", None)
            connector = getattr(session, "connector", None)
            if connector is not None:
                connector._close()
        except Exception:  # noqa: BLE001 - finalizers must not raise
            pass


class StellarChain:
    family: ClassVar[str] = "stellar"
    key_scheme: ClassVar[KeyScheme] = "ed25519"
    # The same envelope is re-sent until it lands or provably expires (no fee bump needed).
    replaceable_in_slot: ClassVar[bool] = False
    supports_channels: ClassVar[bool] = True
    queues_future_sequences: ClassVar[bool] = False
    mempool_visible: ClassVar[bool] = False
    has_trustlines: ClassVar[bool] = True

    def __init__(self, name: str, settings: StellarChainSettings, server: ServerAsync | None = None) -> None:
        self.name = name
        self.settings = settings
        self._fixed_server = server
        # aiohttp sessions belong to the event loop they were made on: one ServerAsync per loop.
        self._servers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ServerAsync] = weakref.WeakKeyDictionary()
        # Registries are dropped without a close(): close the sessions on their still-running loops.
        weakref.finalize(self, _close_servers, self._servers)
        for symbol, token in settings.tokens.items():
            code, sep, issuer = token.address.partition(":")
            if not sep or not code or not StrKey.is_valid_ed25519_public_key(issuer):
                raise ValueError(f"Stellar token {symbol!r}: address must be CODE:ISSUER (G...)")
            Asset(code, issuer)  # raises on a malformed code
            if token.decimals != DECIMALS:
                raise ValueError(f"Stellar token {symbol!r}: every Stellar asset has 7 decimals")

    # --- connection ------------------------------------------------------------------------
    def _horizon(self) -> ServerAsync:
        if self._fixed_server is not None:
            return self._fixed_server
        loop = asyncio.get_running_loop()
        server = self._servers.get(loop)
        if server is None:
            client = AiohttpClient(request_timeout=15, post_timeout=65)
            server = ServerAsync(self.settings.horizon_url, client=client)
            self._servers[loop] = server
        return server

    async def close(self) -> None:
        """Close this event loop's HTTP session (the others close with their loops)."""
        if self._fixed_server is not None:
            return
        server = self._servers.pop(asyncio.get_running_loop(), None)
        if server is not None:
            await server.close()

    async def _read(self, awaitable: Any) -> Any:
        """A Horizon read; a 404 is None, anything unreachable is transient."""
        try:
            return await awaitable
        except NotFoundError:
            return None
        except (TimeoutError, HorizonConnectionError, OSError) as e:
            raise ChainUnavailable(f"{self.name} Horizon unreachable: {e}", chain=self.name) from e
        except BaseHorizonError as e:
            raise ChainUnavailable(f"{self.name} Horizon answered {e.status}: {e.title or e.message[:200]}", chain=self.name) from e

    async def _account(self, account_id: str) -> dict[str, Any] | None:
        account: dict[str, Any] | None = await self._read(self._horizon().accounts().account_id(account_id).call())
        return account

    async def _latest_ledger(self) -> dict[str, Any]:
        page = await self._read(self._horizon().ledgers().order(desc=True).limit(1).call())
        records = (page or {}).get("_embedded", {}).get("records") or []
        if not records:
            raise ChainUnavailable(f"{self.name} Horizon has no closed ledger yet", chain=self.name)
        latest: dict[str, Any] = records[0]
        return latest

    async def _transaction(self, tx_hash: str) -> dict[str, Any] | None:
        transaction: dict[str, Any] | None = await self._read(self._horizon().transactions().transaction(tx_hash.removeprefix("0x")).call())
        return transaction

    # --- addresses and assets -------------------------------------------------------------
    def normalize_address(self, address: str) -> str:
        if not isinstance(address, str):
            raise InvalidRecipient("not a Stellar address", address=str(address)[:64])
        candidate = address.strip()
        if candidate.startswith("G") and StrKey.is_valid_ed25519_public_key(candidate):
            return candidate
        if candidate.startswith("M") and StrKey.is_valid_med25519_public_key(candidate):
            return candidate
        raise InvalidRecipient("not a Stellar account id (G...) or muxed account (M...)", address=candidate[:64])

    @staticmethod
    def _base_account(address: str) -> str:
        """The G... account behind a destination (an M... address credits its G account)."""
        if address.startswith("M"):
            return MuxedAccount.from_account(address).account_id
        return address

    def address_from_public_key(self, public_key: bytes) -> str:
        if len(public_key) != 32:
            raise SigningFailed("expected a 32-byte ed25519 public key")
        return StrKey.encode_ed25519_public_key(bytes(public_key))

    def validate_memo(self, memo: Memo) -> Memo:
        value = memo.value if isinstance(memo.value, str) else ""
        if memo.kind == "text":
            if len(value.encode("utf-8")) > MEMO_TEXT_MAX_BYTES:
                raise InvalidMemo(f"a text memo is at most {MEMO_TEXT_MAX_BYTES} bytes (UTF-8)", kind=memo.kind)
            return Memo("text", value)
        if memo.kind == "id":
            if not value.isascii() or not value.isdigit() or int(value) > UINT64_MAX:
                raise InvalidMemo("an id memo is an unsigned 64-bit decimal integer", kind=memo.kind)
            return Memo("id", str(int(value)))
        if memo.kind == "hash":
            if len(value) != 64:
                raise InvalidMemo("a hash memo is 32 bytes as 64 hex digits", kind=memo.kind)
            try:
                bytes.fromhex(value)
            except ValueError as e:
                raise InvalidMemo("a hash memo is 32 bytes as 64 hex digits", kind=memo.kind) from e
            return Memo("hash", value.lower())
        raise InvalidMemo("memo kind must be text, id or hash", kind=str(memo.kind))

    def asset(self, symbol: str) -> AssetSpec:
        return self.settings.asset(symbol)

    def assets(self) -> list[AssetSpec]:
        return self.settings.assets()

    @staticmethod
    def _sdk_asset(asset: AssetSpec) -> Asset:
        if asset.is_native:
            return Asset.native()
        assert asset.contract is not None
        code, _, issuer = asset.contract.partition(":")
        return Asset(code, issuer)

    @staticmethod
    def _trustline(account: dict[str, Any], asset: Asset) -> dict[str, Any] | None:
        for line in account.get("balances", []):
            if (
                line.get("asset_type") in ("credit_alphanum4", "credit_alphanum12")
                and line.get("asset_code") == asset.code
                and line.get("asset_issuer") == asset.issuer
            ):
                return cast(dict[str, Any], line)
        return None

    # --- reads -----------------------------------------------------------------------------
    async def _min_create_amount(self) -> int:
        ledger = await self._latest_ledger()
        return 2 * int(ledger["base_reserve_in_stroops"])

    async def preflight(self, intent: TransferIntent) -> None:
        """Can the destination receive this payment? (account, trustline, SEP-29 memo)."""
        if intent.trustline:
            await self._check_trustline(intent)
            return
        destination = self._base_account(intent.destination)
        if destination == self._base_account(intent.sender):
            raise InvalidRecipient("a wallet cannot withdraw to itself (muxed or not)", destination=intent.destination)
        account = await self._account(destination)
        asset = self._sdk_asset(intent.asset)
        if account is None:
            if not intent.asset.is_native:
                raise RecipientNoTrustline(
                    f"destination account does not exist, so it has no {intent.asset.symbol} trustline",
                    destination=intent.destination,
                )
            await self._check_create_account(intent)
            return
        if not intent.asset.is_native and destination != asset.issuer:
            line = self._trustline(account, asset)
            if line is None:
                raise RecipientNoTrustline(f"destination has no trustline for {intent.asset.symbol}", destination=intent.destination)
            if line.get("is_authorized") is False and line.get("is_authorized_to_maintain_liabilities") is False:
                raise RecipientNoTrustline(
                    f"destination's {intent.asset.symbol} trustline is not authorized by the issuer",
                    destination=intent.destination,
                )
            limit, held = parse_stroops(line.get("limit", "0")), parse_stroops(line.get("balance", "0"))
            buying = parse_stroops(line.get("buying_liabilities", "0"))
            if held + buying + intent.amount > limit:
                raise InvalidRecipient(
                    f"destination's {intent.asset.symbol} trustline limit is too low for this amount",
                    destination=intent.destination,
                )
        data = account.get("data") or {}
        flag = data.get("config.memo_required")
        if flag is not None and intent.memo is None:
            try:
                required = base64.b64decode(flag) == b"1"
            except (binascii.Error, ValueError):
                required = False
            if required:
                raise MemoRequired("destination requires a memo (SEP-29)", destination=intent.destination)

    async def _check_trustline(self, intent: TransferIntent) -> None:
        """The wallet can add this trustline: a credit asset whose issuer exists, and enough XLM
        for the 0.5 XLM reserve of the new subentry beyond the fee (else op_low_reserve would
        consume the fee for nothing)."""
        if intent.asset.is_native:
            raise PermanentError("XLM needs no trustline", asset=intent.asset.symbol)
        asset = self._sdk_asset(intent.asset)
        assert asset.issuer is not None  # a credit asset: _sdk_asset made it from CODE:ISSUER
        if await self._account(asset.issuer) is None:
            raise InvalidRecipient(f"the issuer of {intent.asset.symbol} does not exist on this network", issuer=asset.issuer)
        account = await self._account(intent.sender)
        if account is None:
            raise InsufficientFunds("the wallet's account does not exist on chain yet (fund it first)", sender=intent.sender)
        if self._trustline(account, asset) is not None:
            return  # change_trust again only re-states the limit: harmless and idempotent
        reserve = int((await self._latest_ledger())["base_reserve_in_stroops"])
        native = self.asset(self.settings.native_symbol)
        if await self.balance(intent.sender, native) < reserve + await self._fee_per_op():
            raise InsufficientFunds(
                "a trustline locks 0.5 XLM of base reserve: the wallet's spendable XLM is too low",
                needed=str(reserve),
                sender=intent.sender,
            )

    async def _check_create_account(self, intent: TransferIntent) -> None:
        if intent.destination.startswith("M"):
            raise InvalidRecipient(
                "destination is unfunded and a muxed (M...) address cannot be created; pay its G account",
                destination=intent.destination,
            )
        await self.check_account_minimum(intent.destination, intent.asset, intent.amount)

    async def check_account_minimum(self, destination: str, asset: AssetSpec, amount: int) -> None:
        """XLM to an account that does not exist is a create_account: below twice the base
        reserve (1 XLM) it fails (op_low_reserve). Credit assets need a trustline (preflight)."""
        if not asset.is_native or destination.startswith("M"):
            return  # an unfunded muxed address cannot be created at all: preflight says so
        if await self._account(destination) is not None:
            return
        minimum = await self._min_create_amount()
        if amount < minimum:
            raise BelowAccountMinimum(
                f"the destination account does not exist yet: the first payment creates it and must be at least "
                f"{to_decimal_string(minimum, DECIMALS)} XLM",
                destination=destination,
                minimum=str(minimum),
            )

    async def account_exists(self, address: str) -> bool:
        return await self._account(self._base_account(address)) is not None

    async def balance(self, address: str, asset: AssetSpec) -> int:
        account = await self._account(self._base_account(address))
        if account is None:
            return 0
        if asset.is_native:
            native = next((b for b in account.get("balances", []) if b.get("asset_type") == "native"), None)
            if native is None:
                return 0
            ledger = await self._latest_ledger()
            reserve = int(ledger["base_reserve_in_stroops"])
            entries = 2 + int(account.get("subentry_count", 0)) + int(account.get("num_sponsoring", 0)) - int(account.get("num_sponsored", 0))
            spendable = parse_stroops(native["balance"]) - entries * reserve - parse_stroops(native.get("selling_liabilities", "0"))
            return max(spendable, 0)
        line = self._trustline(account, self._sdk_asset(asset))
        if line is None:
            return 0
        spendable = parse_stroops(line["balance"]) - parse_stroops(line.get("selling_liabilities", "0"))
        return max(spendable, 0)

    async def _fee_per_op(self, ledger: dict[str, Any] | None = None) -> int:
        ledger = ledger or await self._latest_ledger()
        base_fee = int(ledger["base_fee_in_stroops"])
        cap = self.settings.base_fee_cap_stroops
        if base_fee > cap:
            raise FeeAboveCap(f"network base fee {base_fee} stroops exceeds the cap {cap}", chain=self.name)
        stats = await self._read(self._horizon().fee_stats().call()) or {}
        try:
            recent = int((stats.get("fee_charged") or {}).get(FEE_PERCENTILE, base_fee))
        except (TypeError, ValueError):
            recent = base_fee
        return min(max(base_fee, recent), cap)

    async def estimate_max_fee(self, intent: TransferIntent) -> int:
        return await self._fee_per_op() * OPS_PER_TRANSFER

    async def sweep_quote(self, intent: TransferIntent) -> SweepQuote:
        """account_merge moves the whole balance, reserves included, and removes the account:
        amount = balance - the fee of a one-operation transaction. Trustlines and other
        subentries must be gone first (a merge refuses them)."""
        if not intent.asset.is_native:
            raise PermanentError("a sweep (account_merge) moves XLM", asset=intent.asset.symbol)
        account = await self._account(self._base_account(intent.sender))
        if account is None:
            return SweepQuote(amount=0, fee=0)
        if int(account.get("subentry_count", 0)) > 0:
            raise PermanentError("the account has trustlines or other subentries: account_merge would fail", sender=intent.sender)
        native = next((b for b in account.get("balances", []) if b.get("asset_type") == "native"), None)
        balance = parse_stroops(native["balance"]) if native else 0
        # Bid exactly the network's base fee: without surge pricing that is what is charged, so
        # the recorded amount is what the destination receives (a higher bid would be refunded
        # into the merge and the record would be off by the difference).
        base_fee = int((await self._latest_ledger())["base_fee_in_stroops"])
        if base_fee > self.settings.base_fee_cap_stroops:
            raise FeeAboveCap(f"network base fee {base_fee} stroops exceeds the cap", chain=self.name)
        fee = base_fee * OPS_PER_TRANSFER
        return SweepQuote(amount=balance - fee, fee=fee)

    async def _account_sequence(self, sender: str) -> int:
        account = await self._account(sender)
        if account is None:
            raise InsufficientFunds("the sending account does not exist on chain yet (fund it first)", sender=sender)
        return int(account["sequence"])

    async def next_sequence(self, sender: str, highest_claimed: int | None) -> int:
        current = await self._account_sequence(sender)
        return max(current + 1, -1 if highest_claimed is None else highest_claimed + 1)

    async def settled_sequence(self, sender: str) -> int:
        return await self._account_sequence(sender) + 1

    # --- signing ---------------------------------------------------------------------------
    @staticmethod
    def _sdk_memo(memo: Memo | None) -> Any:
        if memo is None:
            return None
        if memo.kind == "text":
            return TextMemo(memo.value)
        if memo.kind == "id":
            return IdMemo(int(memo.value))
        return HashMemo(bytes.fromhex(memo.value))

    async def sign_transfer(
        self,
        intent: TransferIntent,
        sequence: int | None,
        sign: DigestSigner,
        replacing: SignedTransfer | None = None,
        channel: ChannelKey | None = None,
    ) -> SignedTransfer:
        if sequence is None or sequence <= 0:
            raise SigningFailed("a Stellar transaction needs a sequence number")
        if channel is not None and (intent.sweep or channel.address == intent.sender):
            # A merge's amount is the sender's balance net of the fee it pays itself.
            raise SigningFailed("a sweep, or a wallet paying for itself, takes no channel account")
        # With a channel, the channel is the transaction's source (sequence, fee) and the wallet
        # the operation's source; without one, the wallet is both.
        source = channel.address if channel is not None else intent.sender
        op_source = intent.sender if channel is not None else None
        ledger = await self._latest_ledger()
        fee_per_op = intent.fee if intent.sweep and intent.fee is not None else await self._fee_per_op(ledger)
        max_time = _unix(ledger["closed_at"]) + self.settings.timebounds_seconds
        destination_exists = await self._account(self._base_account(intent.destination)) is not None
        builder = TransactionBuilder(Account(source, sequence - 1), self.settings.network_passphrase, base_fee=fee_per_op).add_time_bounds(
            0, max_time
        )
        amount = format_stroops(max(intent.amount, 0))
        if intent.trustline:
            if intent.asset.is_native:
                raise SigningFailed("XLM needs no trustline")
            operation = "change_trust"
            builder.append_change_trust_op(self._sdk_asset(intent.asset), source=op_source)
        elif intent.sweep:
            if not destination_exists or not intent.asset.is_native:
                raise InvalidRecipient("a sweep merges into an existing account", destination=intent.destination)
            operation = "account_merge"
            builder.append_account_merge_op(intent.destination)
        elif destination_exists:
            operation = "payment"
            builder.append_payment_op(intent.destination, self._sdk_asset(intent.asset), amount, source=op_source)
        else:
            if not intent.asset.is_native:
                raise RecipientNoTrustline(
                    f"destination account does not exist, so it has no {intent.asset.symbol} trustline",
                    destination=intent.destination,
                )
            if intent.amount < 2 * int(ledger["base_reserve_in_stroops"]):
                raise InvalidRecipient(
                    "destination is unfunded; the first payment must be at least 1 XLM",
                    destination=intent.destination,
                )
            if intent.destination.startswith("M"):
                raise InvalidRecipient("an unfunded muxed (M...) address cannot be created")
            operation = "create_account"
            builder.append_create_account_op(intent.destination, amount, source=op_source)
        memo = self._sdk_memo(intent.memo)
        if memo is not None:
            builder.add_memo(memo)
        envelope = builder.build()
        if envelope.transaction.sequence != sequence:
            raise SigningFailed("built transaction does not carry the claimed sequence")
        tx_hash = envelope.hash()  # sha256(networkId || ENVELOPE_TYPE_TX || tx)
        signers = [(intent.sender, sign, "wallet")]
        if channel is not None:
            signers.insert(0, (channel.address, channel.sign, "channel account"))
        unsigned = envelope.transaction.to_xdr_object().to_xdr_bytes()
        for account_id, signer, role in signers:
            envelope.signatures.append(await self._verified_signature(tx_hash, account_id, signer, role, unsigned))
        raw = envelope.to_xdr_object().to_xdr_bytes()
        fee_params: dict[str, Any] = {"max_time": max_time, "fee_per_op": fee_per_op, "operation": operation}
        if channel is not None:
            fee_params["source"] = channel.address
        return SignedTransfer(
            tx_hash=tx_hash.hex(),
            raw_tx=raw.hex(),
            sequence=sequence,
            max_fee=fee_per_op * OPS_PER_TRANSFER,
            fee_params=fee_params,
        )

    @staticmethod
    async def _verified_signature(tx_hash: bytes, account_id: str, sign: DigestSigner, role: str, unsigned: bytes) -> DecoratedSignature:
        await approve_before_signing(sign, tx_hash, unsigned)
        signature = bytes(await sign(tx_hash))
        keypair = Keypair.from_public_key(account_id)
        if len(signature) != 64:
            raise SigningFailed(f"ed25519 signer returned a malformed signature for the {role}")
        try:
            keypair.verify(tx_hash, signature)
        except (BadSignatureError, SdkError, ValueError) as e:
            # Never keep bytes that the account's own key did not sign.
            raise SigningFailed(f"signature does not verify against the {role}'s public key") from e
        return DecoratedSignature(keypair.signature_hint(), signature)

    def describe_unsigned(self, unsigned: bytes) -> SigningRequest:
        """A v1 transaction's XDR decoded with stellar-sdk; the message is its hash on this
        network (sha256(networkId || ENVELOPE_TYPE_TX || tx)), so bytes meant for another network
        never match. Operations: payment, create_account, change_trust, account_merge; anything
        else (or preconditions beyond time bounds) is refused."""
        from stellar_sdk import Transaction, TransactionEnvelope
        from stellar_sdk.operation import AccountMerge, ChangeTrust, CreateAccount, Payment

        try:
            tx = Transaction.from_xdr_object(stellar_xdr.Transaction.from_xdr_bytes(unsigned), v1=True)
            message = TransactionEnvelope(tx, self.settings.network_passphrase).hash()
        except Exception as e:
            raise PolicyViolation(f"not a Stellar transaction: {type(e).__name__}") from e
        preconditions = tx.preconditions
        if preconditions is not None and (
            preconditions.ledger_bounds is not None
            or preconditions.min_sequence_number is not None
            or preconditions.min_sequence_age is not None
            or preconditions.min_sequence_ledger_gap is not None
            or preconditions.extra_signers
        ):
            raise PolicyViolation("preconditions other than time bounds are never part of our transfers")
        source = tx.source.universal_account_id

        def asset_of(asset: Asset) -> str | None:
            return None if asset.is_native() else f"{asset.code}:{asset.issuer}"

        movements: list[Movement] = []
        trustline: tuple[str, str] | None = None
        for operation in tx.operations:
            op_source = operation.source.universal_account_id if operation.source is not None else source
            if isinstance(operation, Payment):
                movements.append(
                    Movement(asset_of(operation.asset), op_source, operation.destination.universal_account_id, parse_stroops(operation.amount))
                )
            elif isinstance(operation, CreateAccount):
                movements.append(Movement(None, op_source, operation.destination, parse_stroops(operation.starting_balance)))
            elif isinstance(operation, AccountMerge):
                movements.append(Movement(None, op_source, operation.destination.universal_account_id, None))
            elif isinstance(operation, ChangeTrust) and isinstance(operation.asset, Asset) and len(tx.operations) == 1:
                asset = asset_of(operation.asset)
                if asset is None:
                    raise PolicyViolation("XLM needs no trustline")
                trustline = (asset, op_source)
            else:
                raise PolicyViolation(f"a {type(operation).__name__} operation is never part of our transfers")
        memo: Memo | None = None
        if isinstance(tx.memo, TextMemo):
            memo = Memo("text", tx.memo.memo_text.decode("utf-8", errors="replace"))
        elif isinstance(tx.memo, IdMemo):
            memo = Memo("id", str(tx.memo.memo_id))
        elif isinstance(tx.memo, HashMemo):
            memo = Memo("hash", tx.memo.memo_hash.hex())
        elif type(tx.memo).__name__ != "NoneMemo":
            raise PolicyViolation(f"a {type(tx.memo).__name__} is never part of our transfers")
        return SigningRequest(
            message=message,
            fee_payer=source,
            sequence=int(tx.sequence),
            max_fee=int(tx.fee),
            fee_within_cap=int(tx.fee) <= self.settings.base_fee_cap_stroops * max(len(tx.operations), 1),
            movements=tuple(movements),
            memo=memo,
            trustline=trustline,
        )

    # --- broadcast and outcome -------------------------------------------------------------
    async def broadcast(self, transfer: SignedTransfer) -> str:
        try:
            envelope_b64 = base64.b64encode(bytes.fromhex(transfer.raw_tx)).decode()
        except ValueError as e:
            raise SubmissionFailed("stored envelope is not hex", tx_hash=transfer.tx_hash) from e
        # POST the stored bytes verbatim (form field `tx`), like ServerAsync.submit_transaction
        # with skip_memo_required_check=True (preflight already did SEP-29), minus its re-parse.
        base = self.settings.horizon_url.rstrip("/")
        client = self._horizon()._client
        try:
            await self._admitted(client, base, envelope_b64, transfer)
            response = await client.post(base + "/transactions", data={"tx": envelope_b64})
            raise_request_exception(response)
            return "accepted"
        except (TimeoutError, HorizonConnectionError, OSError) as e:
            raise ChainUnavailable(f"{self.name} Horizon unreachable: {e}", chain=self.name) from e
        except BadResponseError as e:  # 5xx, 504 timeout included: the same bytes go out again
            raise ChainUnavailable(
                f"{self.name} Horizon answered {e.status} ({e.title or 'error'}); resend the same envelope",
                chain=self.name,
            ) from e
        except BadRequestError as e:
            return await self._classify_rejection(transfer, e)
        except BaseHorizonError as e:
            raise SubmissionFailed(f"unexpected Horizon answer {e.status}", chain=self.name) from e

    async def _admitted(self, client: Any, base: str, envelope_b64: str, transfer: SignedTransfer) -> None:
        """Hand the envelope to stellar-core's queue through Horizon's async endpoint first.
        stellar-core admits one transaction per source account at a time; the synchronous
        endpoint treats its TRY_AGAIN_LATER as pending and holds the request until its own
        timeout (30 s) to answer a 504 that says nothing. Asked this way, the refusal comes back
        at once and is raised as the transient answer it is (no cause: it says nothing against
        the endpoint). Every other answer (queued, duplicate, an error about the transaction, a
        Horizon without this endpoint) leaves the verdict to the synchronous submit that follows:
        it finds the queued envelope (the same bytes are harmless) and waits for its ledger."""
        response = await client.post(base + "/transactions_async", data={"tx": envelope_b64})
        if response.status_code == 503 and _tx_status(response) == "TRY_AGAIN_LATER":
            raise ChainUnavailable(
                f"{self.name}: stellar-core answered TRY_AGAIN_LATER (its source account has a transaction queued already); resend the same envelope",
                chain=self.name,
                tx_hash=transfer.tx_hash,
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise_request_exception(response)  # unreachable or overloaded: as the synchronous submit would say

    async def _classify_rejection(self, transfer: SignedTransfer, error: BadRequestError) -> str:
        if error.status == 429:
            raise ChainUnavailable(f"{self.name} Horizon rate limit", chain=self.name) from error
        extras = error.extras or {}
        codes = extras.get("result_codes") or {}
        tx_code = str(codes.get("transaction", ""))
        if tx_code in ("tx_fee_bump_inner_failed",):
            tx_code = str(codes.get("inner_transaction", tx_code))
        op_codes = [str(c) for c in codes.get("operations") or []]
        details = {"result_codes": codes, "tx_hash": transfer.tx_hash}
        if tx_code == "tx_bad_seq":
            return "slot_used"  # proves nothing about our transfer: transfer_status decides
        if tx_code == "tx_too_late":
            return "expired"  # transfer_status decides once a ledger closes past max_time
        if tx_code == "tx_insufficient_fee":
            raise FeeTooLow("the network refused the fee", chain=self.name, **details) from error
        if tx_code in _NOT_APPLIED_FUNDS_CODES:
            raise InsufficientFunds("the sender cannot pay this transaction", chain=self.name, **details) from error
        if tx_code == "tx_no_source_account":
            raise InsufficientFunds("the sending account does not exist", chain=self.name, **details) from error
        if tx_code == "tx_failed":
            # Applied with a failed operation (sequence and fee consumed) only if it is on chain.
            if await self.is_known(transfer.tx_hash):
                return "applied_failed"
            failed = [c for c in op_codes if c not in ("op_success", "op_inner")]
            if failed and all(c in _FUNDS_OP_CODES for c in failed):
                raise InsufficientFunds("the sender cannot cover this payment", chain=self.name, **details) from error
            for code in failed:
                if code in _RECIPIENT_OP_CODES:
                    raise _RECIPIENT_OP_CODES[code](f"the destination cannot receive this payment ({code})", chain=self.name, **details) from error
        if error.type and error.type.endswith("/transaction_malformed"):
            raise SubmissionFailed("Horizon refused a malformed envelope", chain=self.name, **details) from error
        raise SubmissionFailed(f"transaction refused: {tx_code or error.title or error.status}", chain=self.name, **details) from error

    async def is_known(self, tx_hash: str) -> bool:
        return await self._transaction(tx_hash) is not None

    async def transfer_status(self, intent: TransferIntent, attempts: list[SignedTransfer]) -> TransferStatus:
        if not attempts:
            return TransferStatus(OnChainState.PENDING, detail="no attempt yet")
        # Read the network's clock and the account's sequence BEFORE looking our hashes up:
        # if those already prove an attempt dead and its hash is still absent afterwards, it can
        # never apply (a later ledger cannot include it).
        ledger = await self._latest_ledger()
        sources = {self._slot_source(intent, a) for a in attempts}
        sequences: dict[str, int | None] = {}
        for source in sorted(sources):
            account = await self._account(source)
            sequences[source] = int(account["sequence"]) if account is not None else None
        for attempt in reversed(attempts):
            tx = await self._transaction(attempt.tx_hash)
            if tx is None:
                continue
            fee_paid = int(tx["fee_charged"]) if tx.get("fee_charged") is not None else None
            if tx.get("successful"):
                return TransferStatus(
                    OnChainState.CONFIRMED,
                    tx_hash=attempt.tx_hash,
                    block_number=int(tx["ledger"]),
                    fee_paid=fee_paid,
                )
            tx_code, op_codes = _result_codes(tx.get("result_xdr"))
            return TransferStatus(
                OnChainState.REVERTED,
                tx_hash=attempt.tx_hash,
                block_number=int(tx["ledger"]),
                fee_paid=fee_paid,
                detail=f"{tx_code}: {', '.join(op_codes)}".strip(": "),
            )
        close_time = _unix(ledger["closed_at"])
        reasons: list[str] = []
        for attempt in attempts:
            account_sequence = sequences[self._slot_source(intent, attempt)]
            max_time = int((attempt.fee_params or {}).get("max_time") or 0)
            if max_time and close_time > max_time:
                reasons.append(f"ledger {ledger['sequence']} closed at {close_time} > max_time {max_time}")
            elif account_sequence is not None and attempt.sequence is not None and account_sequence >= attempt.sequence:
                reasons.append(f"sequence {attempt.sequence} consumed by another transaction")
            else:
                return TransferStatus(
                    OnChainState.PENDING,
                    tx_hash=attempts[-1].tx_hash,
                    detail="not in a closed ledger yet; timebounds still open",
                )
        return TransferStatus(OnChainState.EXPIRED, tx_hash=attempts[-1].tx_hash, detail="; ".join(reasons))

    @staticmethod
    def _slot_source(intent: TransferIntent, attempt: SignedTransfer) -> str:
        """The account whose sequence number the attempt takes: its channel, or the wallet."""
        return str((attempt.fee_params or {}).get("source") or intent.sender)

    # --- test networks only ---------------------------------------------------------------
    async def faucet(self, address: str, asset: AssetSpec, amount: int | None) -> Funding:
        """XLM: friendbot creates the account with its own fixed amount (said in the answer), and
        only once. A configured credit asset: a payment from its issuer (`faucet_token_authority`)
        to an account that trusts it."""
        if not asset.is_native:
            if amount is None:
                raise InvalidAmount("amount is required: how much to fund", asset=asset.symbol)
            return await self._pay_test_tokens(address, asset, amount)
        if amount is not None:
            raise InvalidAmount("friendbot funds a new account with its own fixed amount: leave amount out", asset=asset.symbol)
        account_id = self._base_account(address)
        if await self.account_exists(account_id):
            raise AlreadyFunded("friendbot only creates accounts, and this one exists: pay it XLM from another wallet", address=address)
        url = self.settings.friendbot_url or self.settings.horizon_url.rstrip("/") + "/friendbot"
        client = self._horizon()._client
        try:
            response = await client.get(url, params={"addr": account_id})
        except (TimeoutError, HorizonConnectionError, OSError) as e:
            raise ChainUnavailable(f"friendbot unreachable: {e}", chain=self.name) from e
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 500:
            raise ChainUnavailable(f"friendbot answered {response.status_code}", chain=self.name)
        if response.status_code != 200:
            if await self.account_exists(account_id):  # funded meanwhile (two requests raced)
                raise AlreadyFunded("friendbot only creates accounts, and this one exists", address=address)
            detail = body.get("detail") or body.get("title") or response.text[:200]
            raise SubmissionFailed(f"friendbot refused: {detail}", chain=self.name)
        tx_hash = body.get("hash") or body.get("id")
        if not tx_hash:
            raise SubmissionFailed("friendbot answered without a transaction hash", chain=self.name)
        return Funding(str(tx_hash), await self._created_with(account_id, body))

    async def _created_with(self, account_id: str, friendbot_answer: dict[str, Any]) -> int:
        """The starting balance friendbot's create_account gave `account_id` (its envelope), else
        the new account's balance (nothing else can have paid it in the same moment)."""
        try:
            envelope = TransactionEnvelope.from_xdr(friendbot_answer["envelope_xdr"], self.settings.network_passphrase)
            for op in envelope.transaction.operations:
                if isinstance(op, CreateAccount) and op.destination == account_id:
                    return parse_stroops(op.starting_balance)
        except (KeyError, TypeError, ValueError, SdkError):
            pass
        account = await self._account(account_id)
        native = next((b for b in (account or {}).get("balances", []) if b.get("asset_type") == "native"), None)
        return parse_stroops(native["balance"]) if native else 0

    async def _pay_test_tokens(self, address: str, asset: AssetSpec, amount: int) -> Funding:
        secret = self.settings.faucet_token_authority
        sdk_asset = self._sdk_asset(asset)
        if secret is None:
            raise NotAvailable(f"no issuer key is configured for {asset.symbol} on {self.name}", asset=asset.symbol)
        try:
            issuer = Keypair.from_secret(secret.get_secret_value())
        except (ValueError, SdkError) as e:
            raise NotAvailable("faucet_token_authority is not a Stellar secret seed", chain=self.name) from e
        if issuer.public_key != sdk_asset.issuer:
            raise NotAvailable(f"faucet_token_authority is not the issuer of {asset.symbol}", asset=asset.symbol)
        holder = await self._account(self._base_account(address))
        if holder is None or self._trustline(holder, sdk_asset) is None:
            raise RecipientNoTrustline(
                f"the account has no {asset.symbol} trustline yet: add one first (POST /v1/wallets/<id>/trustlines)",
                address=address,
            )
        source = await self._account(issuer.public_key)
        if source is None:
            raise NotAvailable(f"the {asset.symbol} issuer account does not exist on {self.name}", asset=asset.symbol)
        ledger = await self._latest_ledger()
        envelope = (
            TransactionBuilder(
                Account(issuer.public_key, int(source["sequence"])), self.settings.network_passphrase, base_fee=await self._fee_per_op(ledger)
            )
            .append_payment_op(address, sdk_asset, format_stroops(amount))
            # the network's clock, as for transfers (a devnet's may run ahead of ours)
            .add_time_bounds(0, _unix(ledger["closed_at"]) + self.settings.timebounds_seconds)
            .build()
        )
        envelope.sign(issuer)
        try:
            answer = await self._horizon().submit_transaction(envelope, skip_memo_required_check=True)
        except (TimeoutError, HorizonConnectionError, OSError) as e:
            raise ChainUnavailable(f"{self.name} Horizon unreachable: {e}", chain=self.name) from e
        except BaseHorizonError as e:
            codes = (e.extras or {}).get("result_codes") or {}
            raise SubmissionFailed(f"paying {asset.symbol} from its issuer failed: {e.title or e.status} {codes}", chain=self.name) from e
        return Funding(str(answer.get("hash") or envelope.hash_hex()), amount)

    # --- reconciliation (chains.base.ChainHistory) ------------------------------------------
    async def history_point(self) -> HistoryPoint:
        return HistoryPoint()  # Horizon answers with the latest closed ledger

    async def _pages(self, builder: Any, cursor: str | None) -> list[dict[str, Any]]:
        """Every record of a Horizon collection after `cursor`, oldest first."""
        records: list[dict[str, Any]] = []
        while True:
            call = builder.order(desc=False).limit(HORIZON_PAGE)
            if cursor:
                call = call.cursor(cursor)
            page = await self._read(call.call())
            batch = ((page or {}).get("_embedded") or {}).get("records") or []
            records += batch
            if len(batch) < HORIZON_PAGE or len(records) >= TRANSACTIONS_PER_STEP:
                return records
            cursor = batch[-1]["paging_token"]

    async def discover_transfers(
        self,
        accounts: Sequence[str],
        cursors: dict[str, str],
        point: HistoryPoint,
        since: datetime | None,
        ours: OwnTransactions,
    ) -> HistoryChunk:
        """`/accounts/{id}/transactions` (failed ones too) after the cursor (a paging token),
        and for each transaction that is none of ours its `/transactions/{hash}/operations`:
        payments, create_account and account_merge into or out of the account, and the fee
        when the account paid it. One the account is the source of is a spend no withdrawal
        explains, even if it moved nothing."""
        new_cursors = dict(cursors)
        transfers: list[ObservedTransfer] = []
        budget = TRANSACTIONS_PER_STEP
        for account in accounts:
            builder = self._horizon().transactions().for_account(account).include_failed(True)
            records = await self._pages(builder, cursors.get(account))
            known = await ours([r["hash"] for r in records])
            for record in records:
                if budget <= 0:
                    return HistoryChunk(transfers, new_cursors, done=False)
                if record["hash"] not in known:
                    budget -= 1
                    transfers += await self._movements(account, record)
                new_cursors[account] = str(record["paging_token"])
            if len(records) >= TRANSACTIONS_PER_STEP:
                return HistoryChunk(transfers, new_cursors, done=False)
        return HistoryChunk(transfers, new_cursors, done=True)

    def _symbol_of(self, record: dict[str, Any], prefix: str = "") -> str | None:
        """The configured symbol of an operation's asset fields, None for an asset not configured."""
        if record.get(f"{prefix}asset_type") == "native":
            return self.settings.native_symbol
        contract = f"{record.get(f'{prefix}asset_code')}:{record.get(f'{prefix}asset_issuer')}"
        return next((a.symbol for a in self.assets() if a.contract == contract), None)

    async def _movements(self, account: str, tx: dict[str, Any]) -> list[ObservedTransfer]:
        tx_hash, ledger = tx["hash"], int(tx["ledger"])
        found: list[ObservedTransfer] = []
        page = await self._read(self._horizon().operations().for_transaction(tx_hash).limit(HORIZON_PAGE).call())
        operations = ((page or {}).get("_embedded") or {}).get("records") or []
        fee = int(tx.get("fee_charged") or 0) if tx.get("fee_account") == account else 0
        sourced = tx.get("source_account") == account or any(op.get("source_account") == account for op in operations)
        if sourced or fee:
            found.append(
                ObservedTransfer(
                    tx_hash,
                    account,
                    self.settings.native_symbol,
                    "OUT",
                    0,
                    "tx",
                    fee=fee,
                    counterparty=None if tx.get("source_account") == account else tx.get("source_account"),
                    sequence=int(tx["source_account_sequence"]) if tx.get("source_account") == account else None,
                    block_number=ledger,
                )
            )
        if not tx.get("successful"):
            return found  # a failed transaction moved nothing but its fee
        merged = _merged_balances(tx.get("result_xdr"))
        for index, op in enumerate(operations):
            moves: list[tuple[str | None, str, int, str | None]] = []  # (symbol, direction, amount, counterparty)
            kind = op.get("type")
            if kind == "payment":
                symbol = self._symbol_of(op)
                if op.get("to") == account:
                    moves.append((symbol, "IN", parse_stroops(op["amount"]), op.get("from")))
                if op.get("from") == account:
                    moves.append((symbol, "OUT", parse_stroops(op["amount"]), op.get("to")))
            elif kind == "create_account":
                amount = parse_stroops(op["starting_balance"])
                if op.get("account") == account:
                    moves.append((self.settings.native_symbol, "IN", amount, op.get("funder")))
                if op.get("funder") == account:
                    moves.append((self.settings.native_symbol, "OUT", amount, op.get("account")))
            elif kind == "account_merge":
                amount = merged.get(index, 0)
                if op.get("into") == account:
                    moves.append((self.settings.native_symbol, "IN", amount, op.get("account")))
                if op.get("account") == account:
                    moves.append((self.settings.native_symbol, "OUT", amount, op.get("into")))
            for symbol, direction, amount, counterparty in moves:
                if symbol is not None:
                    found.append(
                        ObservedTransfer(
                            tx_hash,
                            account,
                            symbol,
                            direction,
                            amount,
                            f"op:{index}",
                            counterparty=counterparty,
                            block_number=ledger,
                        )
                    )
        return found

    async def ledger_balance(self, account: str, asset: AssetSpec, point: HistoryPoint) -> int:
        """The `balance` Horizon reports: base reserves and liabilities included."""
        record = await self._account(self._base_account(account))
        if record is None:
            return 0
        if asset.is_native:
            line = next((b for b in record.get("balances", []) if b.get("asset_type") == "native"), None)
        else:
            line = self._trustline(record, self._sdk_asset(asset))
        return parse_stroops(line["balance"]) if line is not None else 0

    async def recheck_landed(self, tx_hash: str, block_number: int | None, reorg_depth: int) -> LandedCheck:
        """A closed ledger is final (SCP): the transaction must be there and successful."""
        tx = await self._transaction(tx_hash)
        if tx is None:
            return LandedCheck("MISSING", "Horizon has no such transaction (404)")
        if not tx.get("successful"):
            return LandedCheck("FAILED", f"failed in ledger {tx.get('ledger')}")
        return LandedCheck("FINAL", f"ledger {tx.get('ledger')}")

    async def consumed_slots(self, account: str, point: HistoryPoint) -> None:
        return None  # sequence numbers start at the creating ledger, not at zero

    async def side_costs(self, tx_hash: str, payer: str) -> None:
        return None  # reserves stay in the account's balance; the fee is the whole cost

    def account_of(self, destination: str) -> str:
        return self._base_account(destination)


__all__ = ["StellarChain", "format_stroops", "parse_stroops"]


# --- reconciliation helpers (after the class: additions stay in one place) ---------------------
from collections.abc import Sequence  # noqa: E402

from chains.base import HistoryChunk, HistoryPoint, LandedCheck, ObservedTransfer, OwnTransactions  # noqa: E402

HORIZON_PAGE = 200  # Horizon's largest page
TRANSACTIONS_PER_STEP = 200  # transactions read per discovery step


def _merged_balances(result_xdr: str | None) -> dict[int, int]:
    """Operation index -> XLM an account_merge moved (Horizon's operation record leaves it out;
    the result carries the merged account's balance, as Horizon's account_credited effect does)."""
    if not result_xdr:
        return {}
    outer = stellar_xdr.TransactionResult.from_xdr(result_xdr).result
    # A fee bump's outcome is its inner transaction's; the two result types share the fields read here.
    result: Any = outer.inner_result_pair.result.result if outer.inner_result_pair is not None else outer
    moved: dict[int, int] = {}
    for index, op in enumerate(getattr(result, "results", None) or []):
        merge = getattr(op.tr, "account_merge_result", None) if op.tr is not None else None
        if merge is not None and merge.source_account_balance is not None:
            moved[index] = int(merge.source_account_balance.int64)
    return moved
