"""EVM family (Polygon first; any EIP-1559 chain by configuration), over web3.py.

The slot is (chain, sender, nonce). Fees come from eth_feeHistory with a per-chain floor
and cap; replacements inside the slot raise both fee fields by at least the configured
percentage (geth/Bor need +10%). Node error strings are geth/Bor wording (NOTES section 2).
"""

from __future__ import annotations

import asyncio
import logging
import math
import string
from typing import Any, ClassVar, cast

import aiohttp
import rlp
from eth_account._utils.legacy_transactions import Transaction as LegacyTransaction
from eth_account._utils.legacy_transactions import encode_transaction, serializable_unsigned_transaction_from_dict
from eth_account._utils.transaction_utils import transaction_rpc_to_rlp_structure
from eth_account.typed_transactions.dynamic_fee_transaction import DynamicFeeTransaction
from eth_account.typed_transactions.typed_transaction import TypedTransaction  # the packages' __init__ re-export without __all__
from eth_typing import ChecksumAddress, HexStr
from eth_utils.address import is_address, is_checksum_address, to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    TooManyRequests,
    TransactionNotFound,
    Web3RPCError,
)
from web3.providers.async_base import AsyncBaseProvider
from web3.types import BlockIdentifier, FilterParams, RPCEndpoint, TopicFilter, TxParams, Wei

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
    ChainUnavailable,
    CustodyError,
    FeeAboveCap,
    FeeTooLow,
    InsufficientFunds,
    InvalidAmount,
    InvalidMemo,
    InvalidRecipient,
    PermanentError,
    PolicyViolation,
    SigningFailed,
    SubmissionFailed,
)
from core.settings import AssetSpec, EvmChainSettings
from models.payloads import OnChainState
from signers.base import KeyScheme

log = logging.getLogger(__name__)

NATIVE_TRANSFER_GAS = 21_000
TRANSFER_TOPIC = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
ERC20_ABI: list[dict[str, Any]] = [
    {
        "name": "transfer",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "name": "mint",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [],
    },
]

# Open connections to one node per worker process at most (aiohttp's default): calls beyond it
# wait for a free one.
RPC_CONNECTIONS = 100


def _http_provider(rpc_url: str) -> AsyncHTTPProvider:
    # eth_chainId is answered from web3's own request cache: its validation middleware asks the
    # node for the chain id before every eth_estimateGas and eth_call, a round trip each time for
    # a value an endpoint never changes. Nothing else is cached (receipts, blocks, nonces never), so
    # no block-age threshold is needed to validate cached blocks (None: web3 would ask the chain id
    # once more to pick one).
    return AsyncHTTPProvider(
        rpc_url,
        request_kwargs={"timeout": 15},
        cache_allowed_requests=True,
        cacheable_requests={RPCEndpoint("eth_chainId")},
        request_cache_validation_threshold=None,
    )


_CONNECTIVITY_ERRORS = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ConnectionError,
    ProviderConnectionError,
    TooManyRequests,
    TimeExhausted,
)


def _message(error: Exception) -> str:
    if isinstance(error, Web3RPCError) and isinstance(error.rpc_response, dict):
        detail: object = error.rpc_response.get("error") or {}
        if isinstance(detail, dict) and detail.get("message"):
            return str(detail["message"])
    return str(error)


def _bumped(previous: int, percent: int) -> int:
    return math.ceil(previous * (100 + percent) / 100)


# A transfer of ours never needs more gas than this; a signing request asking for more is refused.
MAX_GAS_PER_TRANSFER = 1_000_000
ERC20_TRANSFER_SELECTOR = keccak(text="transfer(address,uint256)")[:4]


# web3 types its arguments with eth-typing's NewTypes; custody holds addresses and hashes as text
# (checksummed where stored). These name the text for web3 without converting it.
def _address(value: str) -> ChecksumAddress:
    return cast(ChecksumAddress, value)


def _hash(value: str) -> HexStr:
    return cast(HexStr, value)


def _contract(asset: AssetSpec) -> ChecksumAddress:
    """A token's contract address (settings require one for every token)."""
    if asset.contract is None:
        raise PermanentError("a token asset needs its contract address", asset=asset.symbol)
    return to_checksum_address(asset.contract)


def _unsigned_type2(unsigned: TypedTransaction) -> bytes:
    """0x02 || rlp(unsigned fields): the bytes whose keccak an EIP-1559 signature covers."""
    # eth-account types `transaction` as its abstract base and the serializer as a plain type:
    # a 0x02 transaction is a DynamicFeeTransaction with an rlp Serializable class.
    fields = {k: v for k, v in cast(DynamicFeeTransaction, unsigned.transaction).dictionary.items() if k not in ("v", "r", "s")}
    serializer: Any = DynamicFeeTransaction._unsigned_transaction_serializer
    return bytes([2]) + bytes(rlp.encode(serializer.from_dict(transaction_rpc_to_rlp_structure(fields))))


class EvmChain:
    family: ClassVar[str] = "evm"
    key_scheme: ClassVar[KeyScheme] = "secp256k1"
    replaceable_in_slot: ClassVar[bool] = True
    supports_channels: ClassVar[bool] = False
    queues_future_sequences: ClassVar[bool] = True
    mempool_visible: ClassVar[bool] = True
    has_trustlines: ClassVar[bool] = False

    def __init__(self, name: str, settings: EvmChainSettings, web3: AsyncWeb3[AsyncBaseProvider] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.web3 = web3 or AsyncWeb3(_http_provider(settings.rpc_url))
        self._no_finalized_tag = False  # learned once per process (finality "auto")
        self._keeping_alive: asyncio.Task[None] | None = None  # installing the session, in its loop

    # --- addresses and assets -------------------------------------------------------------
    def normalize_address(self, address: str) -> str:
        if isinstance(address, str) and len(address) == 40 and all(c in string.hexdigits for c in address):
            raise InvalidRecipient("an EVM address starts with 0x: 0x + 40 hex digits", address=address)
        if not isinstance(address, str) or not address.lower().startswith("0x") or not is_address(address):
            raise InvalidRecipient("not an EVM address (0x + 40 hex digits)", address=str(address)[:64])
        if address != address.lower() and address[2:] != address[2:].upper() and not is_checksum_address(address):
            raise InvalidRecipient("EIP-55 checksum mismatch", address=address)
        checksummed = to_checksum_address(address)
        if int(checksummed, 16) == 0:
            raise InvalidRecipient("the zero address burns funds", address=address)
        return checksummed

    def address_from_public_key(self, public_key: bytes) -> str:
        if len(public_key) == 65 and public_key[0] == 4:
            public_key = public_key[1:]
        if len(public_key) != 64:
            raise SigningFailed("expected an uncompressed secp256k1 public key")
        return to_checksum_address(keccak(public_key)[-20:])

    def validate_memo(self, memo: Memo) -> Memo:
        raise InvalidMemo("EVM transfers carry no memo", chain=self.name)

    def asset(self, symbol: str) -> AssetSpec:
        return self.settings.asset(symbol)

    def assets(self) -> list[AssetSpec]:
        return self.settings.assets()

    # --- reads -----------------------------------------------------------------------------
    async def preflight(self, intent: TransferIntent) -> None:
        """Any EVM address can receive ETH and ERC-20 tokens: nothing to check."""

    async def check_account_minimum(self, destination: str, asset: AssetSpec, amount: int) -> None:
        """Every EVM address exists: any amount can be its first."""

    async def _keep_connections_alive(self) -> None:
        """Give web3 a pooled, keep-alive HTTP session for this event loop before its first request
        there. web3's own (aiohttp, force_close=True) opens and closes a TCP connection for every
        call: a withdrawal's dozen calls, a dozen connections for the worker and the node. Calls
        that arrive together all wait for the one installation (a call let through earlier would
        make web3 cache its own session first, for good)."""
        loop = asyncio.get_running_loop()
        provider = self.web3.provider
        if not isinstance(provider, AsyncHTTPProvider):
            return
        installing = self._keeping_alive
        if installing is None or installing.get_loop() is not loop:
            installing = self._keeping_alive = loop.create_task(self._install_session(provider))
        if installing.done():
            return
        try:
            await asyncio.shield(installing)
        except Exception:  # never a reason to fail a call: web3's own session serves it instead
            log.warning("keep-alive RPC session not installed", extra={"chain": self.name}, exc_info=True)

    @staticmethod
    async def _install_session(provider: AsyncHTTPProvider) -> None:
        # raise_for_status as web3's own session does: an HTTP error answer is a ClientResponseError.
        session = aiohttp.ClientSession(raise_for_status=True, connector=aiohttp.TCPConnector(limit=RPC_CONNECTIONS))
        if await provider.cache_async_session(session) is not session:
            await session.close()  # web3 already had one for this loop and keeps it

    async def _call(self, awaitable: Any) -> Any:
        await self._keep_connections_alive()
        try:
            return await awaitable
        except _CONNECTIVITY_ERRORS as e:
            raise ChainUnavailable(f"{self.name} RPC unreachable: {e}", chain=self.name) from e

    def _token(self, asset: AssetSpec) -> Any:
        return self.web3.eth.contract(address=_contract(asset), abi=ERC20_ABI)

    async def account_exists(self, address: str) -> bool:
        return True  # every address can hold and receive ETH

    async def balance(self, address: str, asset: AssetSpec) -> int:
        if asset.is_native:
            return int(await self._call(self.web3.eth.get_balance(_address(address), "latest")))
        return int(await self._call(self._token(asset).functions.balanceOf(address).call()))

    async def _fees(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) for the next block, within the per-chain cap."""
        cfg = self.settings
        history = await self._call(self.web3.eth.fee_history(cfg.fee_history_blocks, "latest", [cfg.fee_percentile]))
        next_base_fee = int(history["baseFeePerGas"][-1])
        tips = sorted(int(r[0]) for r in history.get("reward") or [] if r)
        tip = max(tips[len(tips) // 2] if tips else 0, cfg.min_priority_fee_wei)
        if next_base_fee + tip > cfg.max_fee_per_gas_cap_wei:
            raise FeeAboveCap(
                f"base fee {next_base_fee} + tip {tip} wei exceeds cap {cfg.max_fee_per_gas_cap_wei}",
                chain=self.name,
            )
        return min(2 * next_base_fee + tip, cfg.max_fee_per_gas_cap_wei), tip

    def _call_fields(self, intent: TransferIntent) -> dict[str, Any]:
        if intent.asset.is_native:
            return {"to": intent.destination, "value": intent.amount, "data": b""}
        data = self._token(intent.asset).encode_abi("transfer", args=[intent.destination, intent.amount])
        return {"to": _contract(intent.asset), "value": 0, "data": HexBytes(data)}

    async def _gas_limit(self, intent: TransferIntent) -> int:
        fields = self._call_fields(intent)
        try:
            estimate = int(await self._call(self.web3.eth.estimate_gas(cast(TxParams, {"from": intent.sender, **fields}), "latest")))
        except (ContractLogicError, Web3RPCError) as e:
            message = _message(e).lower()
            if "insufficient" in message or "exceeds balance" in message or "revert" in message:
                raise InsufficientFunds(f"the transfer would fail: {_message(e)}", chain=self.name) from e
            raise SubmissionFailed(f"gas estimation failed: {_message(e)}", chain=self.name) from e
        # A plain transfer to an account without code costs exactly 21000; contracts get headroom.
        return estimate if estimate == NATIVE_TRANSFER_GAS else math.ceil(estimate * 1.25)

    async def estimate_max_fee(self, intent: TransferIntent) -> int:
        max_fee, _ = await self._fees()
        return (await self._gas_limit(intent)) * max_fee

    async def sweep_quote(self, intent: TransferIntent) -> SweepQuote:
        """Balance - 21000 x gasPrice, for a legacy (type-0) transaction: its fee is exactly
        gasUsed x gasPrice and a plain transfer to an account without code uses exactly 21000,
        so the account ends at 0 wei. gasPrice = this block's maxFeePerGas (2 x base fee + tip)."""
        if not intent.asset.is_native:
            raise PermanentError("a sweep moves the native asset", asset=intent.asset.symbol)
        code = await self._call(self.web3.eth.get_code(_address(intent.destination)))
        if code:
            raise InvalidRecipient("a sweep goes to an account without code (exactly 21000 gas)", address=intent.destination)
        gas_price, _ = await self._fees()
        fee = NATIVE_TRANSFER_GAS * gas_price
        balance = await self.balance(intent.sender, intent.asset)
        return SweepQuote(amount=balance - fee, fee=fee)

    async def next_sequence(self, sender: str, highest_claimed: int | None) -> int:
        pending = int(await self._call(self.web3.eth.get_transaction_count(_address(sender), "pending")))
        return max(pending, -1 if highest_claimed is None else highest_claimed + 1)

    async def settled_sequence(self, sender: str) -> int:
        return int(await self._call(self.web3.eth.get_transaction_count(_address(sender), "latest")))

    # --- signing ---------------------------------------------------------------------------
    async def sign_transfer(
        self,
        intent: TransferIntent,
        sequence: int | None,
        sign: DigestSigner,
        replacing: SignedTransfer | None = None,
        channel: ChannelKey | None = None,
    ) -> SignedTransfer:
        if channel is not None:  # the protocol's channel accounts are Stellar's (supports_channels)
            raise SigningFailed("this chain signs with the wallet alone: no channel accounts", chain=self.name)
        if sequence is None:
            raise SigningFailed("an EVM transaction needs a nonce")
        if intent.sweep:
            return await self._sign_sweep(intent, sequence, sign, replacing)
        max_fee, tip = await self._fees()
        if replacing is not None:
            bump = self.settings.fee_bump_percent
            # A legacy (sweep) attempt has one gasPrice: it is both its fee cap and its tip.
            previous_tip = replacing.fee_params.get("maxPriorityFeePerGas", replacing.fee_params.get("gasPrice"))
            previous_max = replacing.fee_params.get("maxFeePerGas", replacing.fee_params.get("gasPrice"))
            tip = max(tip, _bumped(int(cast(int, previous_tip)), bump))
            max_fee = max(max_fee, _bumped(int(cast(int, previous_max)), bump), tip)
            if max_fee > self.settings.max_fee_per_gas_cap_wei:
                raise FeeAboveCap("a replacement would exceed the fee cap", chain=self.name)
            gas = int(replacing.fee_params["gas"])
        else:
            gas = await self._gas_limit(intent)
        tx = {
            "type": 2,
            "chainId": self.settings.chain_id,
            "nonce": sequence,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
            **self._call_fields(intent),
        }
        unsigned = TypedTransaction.from_dict(tx)
        await approve_before_signing(sign, unsigned.hash(), _unsigned_type2(unsigned))
        signature = await sign(unsigned.hash())
        if len(signature) != 65:
            raise SigningFailed("secp256k1 signer returned a malformed signature")
        r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
        signed = TypedTransaction.from_dict({**tx, "v": v, "r": r, "s": s})
        raw = signed.encode()
        recovered = self._sender_of(raw)
        if recovered != intent.sender:
            # Never broadcast bytes that would spend from a different account than the wallet's.
            raise SigningFailed("signature does not recover to the wallet address", recovered=recovered)
        return SignedTransfer(
            tx_hash="0x" + keccak(raw).hex(),
            raw_tx=raw.hex(),
            sequence=sequence,
            max_fee=gas * max_fee,
            fee_params={"gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip},
        )

    async def _sign_sweep(self, intent: TransferIntent, sequence: int, sign: DigestSigner, replacing: SignedTransfer | None) -> SignedTransfer:
        """Type-0 transfer of everything: value + 21000 x gasPrice = what the account held when
        the sweep was reserved. A replacement raises gasPrice and lowers value by the difference."""
        if not intent.asset.is_native or intent.fee is None:
            raise SigningFailed("a sweep is a native transfer with its fee fixed at reserve time")
        gas = NATIVE_TRANSFER_GAS
        if replacing is None:
            gas_price, value = intent.fee // gas, intent.amount
        else:
            total = int(replacing.fee_params["sweep_total"])
            current, _ = await self._fees()
            gas_price = max(current, _bumped(int(replacing.fee_params["gasPrice"]), self.settings.fee_bump_percent))
            if gas_price > self.settings.max_fee_per_gas_cap_wei:
                raise FeeAboveCap("a replacement would exceed the fee cap", chain=self.name)
            value = total - gas * gas_price
            if value <= 0:
                raise FeeAboveCap("a bumped sweep would cost more than the account holds", chain=self.name)
        tx: dict[str, Any] = {
            "chainId": self.settings.chain_id,
            "nonce": sequence,
            "gasPrice": gas_price,
            "gas": gas,
            "to": intent.destination,
            "value": value,
            "data": b"",
        }
        unsigned = serializable_unsigned_transaction_from_dict(tx)
        await approve_before_signing(sign, unsigned.hash(), rlp.encode(unsigned))
        signature = await sign(unsigned.hash())
        if len(signature) != 65:
            raise SigningFailed("secp256k1 signer returned a malformed signature")
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
        v = signature[64] + 35 + 2 * self.settings.chain_id  # EIP-155
        raw = encode_transaction(unsigned, vrs=(v, r, s))
        recovered = self._sender_of(raw)
        if recovered != intent.sender:
            raise SigningFailed("signature does not recover to the wallet address", recovered=recovered)
        return SignedTransfer(
            tx_hash="0x" + keccak(raw).hex(),
            raw_tx=raw.hex(),
            sequence=sequence,
            max_fee=gas * gas_price,
            fee_params={"type": 0, "gas": gas, "gasPrice": gas_price, "value": value, "sweep_total": value + gas * gas_price},
        )

    @staticmethod
    def _sender_of(raw: bytes) -> str:
        from eth_account import Account

        sender: str = Account.recover_transaction(raw)
        return sender

    def describe_unsigned(self, unsigned: bytes) -> SigningRequest:
        """EIP-1559 (0x02) or legacy EIP-155 bytes, decoded with rlp and eth-account's own
        serializers. The sender is whoever signs, so it is not in the bytes; the signing guard
        knows which key it hands over. Native value to `to`, or an ERC-20 `transfer(to, amount)`
        with no value; any other call data is refused."""
        try:
            if unsigned[:1] == b"\x02":
                fields = rlp.decode(unsigned[1:], DynamicFeeTransaction._unsigned_transaction_serializer).as_dict()
                if fields["accessList"]:
                    raise PolicyViolation("an access list is never part of our transfers")
                fee_rate, message = int(fields["maxFeePerGas"]), keccak(unsigned)
                chain_id = int(fields["chainId"])
            else:
                legacy = rlp.decode(unsigned, LegacyTransaction)
                fields = legacy.as_dict()
                if int(fields["r"]) != 0 or int(fields["s"]) != 0:
                    raise PolicyViolation("legacy transactions are signed only with EIP-155 replay protection")
                fee_rate, message, chain_id = int(fields["gasPrice"]), keccak(unsigned), int(fields["v"])
        except PolicyViolation:
            raise
        except Exception as e:  # rlp errors of any kind: bytes we did not build
            raise PolicyViolation(f"not a transaction this chain signs: {type(e).__name__}") from e
        if chain_id != self.settings.chain_id:
            raise PolicyViolation(f"chain id {chain_id} is not {self.name}'s {self.settings.chain_id}")
        gas, to, value, data = int(fields["gas"]), bytes(fields["to"]), int(fields["value"]), bytes(fields["data"])
        if len(to) != 20:
            raise PolicyViolation("contract creation is never part of our transfers")
        if not data:
            movement = Movement(asset=None, source="", destination=to_checksum_address(to), amount=value)
        elif data[:4] == ERC20_TRANSFER_SELECTOR and len(data) == 4 + 64 and value == 0:
            recipient, amount = data[4 + 12 : 4 + 32], int.from_bytes(data[4 + 32 :], "big")
            if any(data[4 : 4 + 12]):
                raise PolicyViolation("malformed ERC-20 transfer recipient")
            movement = Movement(asset=to_checksum_address(to), source="", destination=to_checksum_address(recipient), amount=amount)
        else:
            raise PolicyViolation("call data other than an ERC-20 transfer is never part of our transfers")
        return SigningRequest(
            message=bytes(message),
            fee_payer="",
            sequence=int(fields["nonce"]),
            max_fee=gas * fee_rate,
            fee_within_cap=fee_rate <= self.settings.max_fee_per_gas_cap_wei and gas <= MAX_GAS_PER_TRANSFER,
            movements=(movement,),
        )

    # --- broadcast and outcome -------------------------------------------------------------
    async def broadcast(self, transfer: SignedTransfer) -> str:
        await self._keep_connections_alive()
        try:
            await self.web3.eth.send_raw_transaction(HexBytes(transfer.raw_tx))
            return "accepted"
        except _CONNECTIVITY_ERRORS as e:
            raise ChainUnavailable(f"{self.name} RPC unreachable: {e}", chain=self.name) from e
        except (Web3RPCError, ValueError) as e:
            return self._classify_send_error(_message(e))

    def _classify_send_error(self, message: str) -> str:
        lowered = message.lower()
        if "already known" in lowered or "known transaction" in lowered or "already imported" in lowered:
            return "known"
        # Proves only that the nonce is used, not by whom: the caller checks every receipt.
        if "nonce too low" in lowered or "replacement transaction underpriced" in lowered:
            return "slot_used"
        if "insufficient funds" in lowered:
            raise InsufficientFunds(message, chain=self.name)
        if "underpriced" in lowered or "below minimum" in lowered or "max fee per gas less than block base fee" in lowered:
            raise FeeTooLow(message, chain=self.name)
        if "exceeds the configured cap" in lowered:
            raise SubmissionFailed(message, chain=self.name)
        if "nonce too high" in lowered or "gapped" in lowered:
            raise ChainUnavailable(f"node is not ready for this nonce yet: {message}", chain=self.name)
        raise SubmissionFailed(message, chain=self.name)

    async def is_known(self, tx_hash: str) -> bool:
        try:
            await self._call(self.web3.eth.get_transaction(_hash(tx_hash)))
            return True
        except TransactionNotFound:
            return False

    async def _receipt(self, tx_hash: str) -> Any | None:
        try:
            return await self._call(self.web3.eth.get_transaction_receipt(_hash(tx_hash)))
        except TransactionNotFound:
            return None

    async def _is_final(self, receipt: Any) -> bool:
        """Mined in a block that is canonical and final: at or below the node's `finalized`
        block (Polygon milestones, Ethereum's finalized checkpoint) where it has one, else
        `confirmations` deep. Until then a reorg can take the transaction out again."""
        block_number = int(receipt["blockNumber"])
        # A reorg moves the receipt to another block: only the canonical block hash counts.
        canonical = await self._call(self.web3.eth.get_block(block_number))
        if canonical["hash"] != receipt["blockHash"]:
            return False
        finalized = await self._finalized_block_number()
        if finalized is not None:
            return finalized >= block_number
        head = int(await self._call(self.web3.eth.block_number))
        return head - block_number + 1 >= self.settings.confirmations

    async def _last_final_block(self) -> int:
        """The last final block, as COMPLETED is decided: the node's finalized block, else
        head - confirmations + 1."""
        number = await self._finalized_block_number()
        if number is None:
            head = int(await self._call(self.web3.eth.block_number))
            number = max(head - self.settings.confirmations + 1, 0)
        return number

    async def _final_nonce(self, sender: str) -> int:
        """The sender's nonce in the last final block: transactions no reorg can take out."""
        return int(await self._call(self.web3.eth.get_transaction_count(_address(sender), await self._last_final_block())))

    async def _finalized_block_number(self) -> int | None:
        """The node's finalized block, or None where finality is by depth (configured, or
        `auto` on a node that has no `finalized` tag)."""
        mode = self.settings.finality
        if mode == "depth" or (mode == "auto" and self._no_finalized_tag):
            return None
        try:
            block = await self._call(self.web3.eth.get_block("finalized"))
        except (Web3RPCError, ValueError) as e:
            if mode == "finalized":
                raise ChainUnavailable(f"{self.name}: the node has no finalized block: {_message(e)}", chain=self.name) from e
            self._no_finalized_tag = True
            log.warning("node has no `finalized` block tag: finality by confirmation depth", extra={"chain": self.name})
            return None
        return int(block["number"])

    def _transfer_happened(self, receipt: Any, intent: TransferIntent) -> bool:
        if int(receipt["status"]) != 1:
            return False
        if intent.asset.is_native:
            return True
        token = _contract(intent.asset).lower()
        for entry in receipt["logs"]:
            topics = [HexBytes(t).hex() for t in entry["topics"]]
            topics = [t if t.startswith("0x") else "0x" + t for t in topics]
            if (
                entry["address"].lower() == token
                and topics[0] == TRANSFER_TOPIC
                and len(topics) == 3
                and int(topics[1], 16) == int(intent.sender, 16)
                and int(topics[2], 16) == int(intent.destination, 16)
                and int.from_bytes(HexBytes(entry["data"]), "big") == intent.amount
            ):
                return True
        return False

    async def transfer_status(self, intent: TransferIntent, attempts: list[SignedTransfer]) -> TransferStatus:
        if not attempts:
            return TransferStatus(OnChainState.PENDING, detail="no attempt yet")
        # Read the nonce as of the last final block before the receipts: if it is past ours and
        # still no receipt of ours exists afterwards, the slot was used by someone else, for good.
        # (The head's nonce would race a reorg: read before it, receipts after it, our own
        # transfer taken out and sent again would look like a foreign one.)
        settled = await self._final_nonce(intent.sender)
        for attempt in attempts:
            receipt = await self._receipt(attempt.tx_hash)
            if receipt is None:
                continue
            if not await self._is_final(receipt):
                return TransferStatus(
                    OnChainState.PENDING,
                    tx_hash=attempt.tx_hash,
                    block_number=int(receipt["blockNumber"]),
                    detail="mined, awaiting finality",
                )
            fee_paid = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
            if attempt.purpose == "CANCEL":
                return TransferStatus(
                    OnChainState.CANCELLED,
                    tx_hash=attempt.tx_hash,
                    block_number=int(receipt["blockNumber"]),
                    fee_paid=fee_paid,
                    detail="the cancellation replaced the transfer",
                )
            happened = self._transfer_happened(receipt, intent)
            return TransferStatus(
                OnChainState.CONFIRMED if happened else OnChainState.REVERTED,
                tx_hash=attempt.tx_hash,
                block_number=int(receipt["blockNumber"]),
                fee_paid=fee_paid,
                detail="" if happened else "transaction reverted or transfer event missing",
            )
        sequence = attempts[-1].sequence
        if sequence is not None and settled > sequence:
            return TransferStatus(OnChainState.SLOT_LOST, detail=f"nonce {sequence} consumed externally")
        return TransferStatus(OnChainState.PENDING, detail="not mined yet")

    # --- test networks only ---------------------------------------------------------------
    async def faucet(self, address: str, asset: AssetSpec, amount: int | None) -> Funding:
        """Pay from the node's first unlocked dev account (anvil/hardhat); a test token is minted
        (the TestToken contract's open mint). Test networks only."""
        if amount is None:
            raise InvalidAmount("amount is required: how much to fund", asset=asset.symbol)
        accounts = await self._call(self.web3.eth.accounts)
        if not accounts:
            raise SubmissionFailed("this node has no unlocked dev account to fund from")
        funder = accounts[0]
        try:
            if asset.is_native:
                tx_hash = await self.web3.eth.send_transaction({"from": funder, "to": _address(address), "value": Wei(amount)})
            else:
                tx_hash = await self._token(asset).functions.mint(address, amount).transact({"from": funder})
            receipt = await self.web3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        except CustodyError:
            raise
        except _CONNECTIVITY_ERRORS as e:
            raise ChainUnavailable(str(e)) from e
        except (Web3RPCError, ContractLogicError, ValueError) as e:
            raise SubmissionFailed(f"faucet transfer failed: {_message(e)}") from e
        if int(receipt["status"]) != 1:
            raise SubmissionFailed("faucet transfer reverted")
        return Funding("0x" + HexBytes(tx_hash).hex().removeprefix("0x"), amount)

    # --- reconciliation (chains.base.ChainHistory) ------------------------------------------
    async def history_point(self) -> HistoryPoint:
        """The last final block, as COMPLETED is decided."""
        block = await self._call(self.web3.eth.get_block(await self._last_final_block()))
        return HistoryPoint(block_number=int(block["number"]), block_hash=_0x(block["hash"]))

    async def _block_or_none(self, number: int, full: bool = False) -> Any | None:
        try:
            return await self._call(self.web3.eth.get_block(number, full))
        except BlockNotFound:
            return None

    async def _first_block_since(self, since: datetime | None, last: int) -> int:
        """The first block mined at or after `since` (minus a margin for clock skew): no
        transfer to a key can precede the key. Timestamps never decrease, so bisect."""
        if since is None:
            return 0
        target = int(since.timestamp()) - SCAN_CLOCK_MARGIN_SECONDS
        low, high = 0, last + 1
        while low < high:
            middle = (low + high) // 2
            block = await self._block_or_none(middle)
            if block is not None and int(block["timestamp"]) >= target:
                high = middle
            else:
                low = middle + 1
        return low

    async def discover_transfers(
        self,
        accounts: Sequence[str],
        cursors: dict[str, str],
        point: HistoryPoint,
        since: datetime | None,
        ours: OwnTransactions,
    ) -> HistoryChunk:
        """Blocks after the cursor up to `point`, SCAN_BLOCKS at a time: native value sent to
        our addresses, transactions sent from them, and ERC-20 Transfer logs of the configured
        tokens to or from them. The cursor is `<block>:<hash>`; a changed hash there is a reorg:
        rescan from REORG_REWIND_BLOCKS earlier and drop what was seen from there on."""
        assert point.block_number is not None, "EVM history is read at a block"
        rewind = None
        cursor = cursors.get(BLOCKS_CURSOR)
        if cursor:
            number_text, _, seen_hash = cursor.partition(":")
            start = int(number_text) + 1
            block = await self._block_or_none(int(number_text))
            if block is None or _0x(block["hash"]) != seen_hash:
                start = rewind = max(int(number_text) - REORG_REWIND_BLOCKS, 0)
        else:
            start = await self._first_block_since(since, point.block_number)
        end = min(point.block_number, start + SCAN_BLOCKS - 1)
        if start > end:
            return HistoryChunk([], dict(cursors), done=True, rewind_to_block=rewind)
        ours_by_key: dict[str, str] = {a.lower(): to_checksum_address(a) for a in accounts}
        blocks = await self._blocks(start, end)
        transfers = await self._native_movements(blocks, ours_by_key, ours)
        transfers += await self._token_movements(start, end, ours_by_key, ours)
        last = blocks[-1]
        return HistoryChunk(
            transfers,
            {**cursors, BLOCKS_CURSOR: f"{int(last['number'])}:{_0x(last['hash'])}"},
            done=end >= point.block_number,
            rewind_to_block=rewind,
        )

    async def _blocks(self, start: int, end: int) -> list[Any]:
        """Blocks start..end with their transactions, in one JSON-RPC batch per BATCH_SIZE."""
        blocks: list[Any] = []
        for first in range(start, end + 1, BATCH_SIZE):
            numbers = range(first, min(first + BATCH_SIZE, end + 1))
            await self._keep_connections_alive()
            try:
                async with self.web3.batch_requests() as batch:
                    for number in numbers:
                        batch.add(self.web3.eth.get_block(number, True))
                    blocks += await batch.async_execute()
            except _CONNECTIVITY_ERRORS as e:
                raise ChainUnavailable(f"{self.name} RPC unreachable: {e}", chain=self.name) from e
        return blocks

    async def _native_movements(self, blocks: list[Any], accounts: dict[str, str], ours: OwnTransactions) -> list[ObservedTransfer]:
        candidates = [
            (block, tx)
            for block in blocks
            for tx in block["transactions"]
            if str(tx["from"]).lower() in accounts or (tx.get("to") and str(tx["to"]).lower() in accounts and int(tx["value"]) > 0)
        ]
        known = await ours([_0x(tx["hash"]) for _, tx in candidates])
        found: list[ObservedTransfer] = []
        for block, tx in candidates:
            tx_hash = _0x(tx["hash"])
            if tx_hash in known:
                continue
            receipt = await self._receipt(tx_hash)
            if receipt is None:  # cannot be: the block holds it; a node without receipts is unusable
                raise ChainUnavailable(f"{self.name} has no receipt for mined {tx_hash}", chain=self.name)
            moved = int(tx["value"]) if int(receipt["status"]) == 1 else 0
            sender, receiver = str(tx["from"]).lower(), str(tx.get("to") or "").lower()
            block_number, block_hash = int(block["number"]), _0x(block["hash"])
            if sender in accounts:
                found.append(
                    ObservedTransfer(
                        tx_hash=tx_hash,
                        account=accounts[sender],
                        asset=self.settings.native_symbol,
                        direction="OUT",
                        amount=moved,
                        fee=int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"]),
                        event_key="tx",
                        counterparty=tx.get("to"),
                        sequence=int(tx["nonce"]),
                        block_number=block_number,
                        block_hash=block_hash,
                    )
                )
            if receiver in accounts and moved > 0:
                found.append(
                    ObservedTransfer(
                        tx_hash=tx_hash,
                        account=accounts[receiver],
                        asset=self.settings.native_symbol,
                        direction="IN",
                        amount=moved,
                        event_key="value",
                        counterparty=tx["from"],
                        block_number=block_number,
                        block_hash=block_hash,
                    )
                )
        return found

    async def _token_movements(self, start: int, end: int, accounts: dict[str, str], ours: OwnTransactions) -> list[ObservedTransfer]:
        tokens = {to_checksum_address(a.contract).lower(): a.symbol for a in self.assets() if not a.is_native and a.contract}
        if not tokens or not accounts:
            return []
        logs: dict[tuple[str, int], Any] = {}
        topics = [HexStr("0x" + "0" * 24 + key[2:]) for key in accounts]
        for i in range(0, len(topics), LOG_FILTER_ADDRESSES):
            chunk = topics[i : i + LOG_FILTER_ADDRESSES]
            for position in (1, 2):  # Transfer(from, to, value): from us, to us
                query: list[TopicFilter] = [HexStr(TRANSFER_TOPIC), None, None]
                query[position] = chunk
                params: FilterParams = {
                    "fromBlock": start,
                    "toBlock": end,
                    "address": [to_checksum_address(t) for t in tokens],
                    "topics": query,
                }
                for entry in await self._call(self.web3.eth.get_logs(params)):
                    logs[(_0x(entry["transactionHash"]), int(entry["logIndex"]))] = entry
        known = await ours(sorted({tx_hash for tx_hash, _ in logs}))
        found: list[ObservedTransfer] = []
        for (tx_hash, index), entry in sorted(logs.items(), key=lambda item: (int(item[1]["blockNumber"]), item[0][1])):
            if tx_hash in known or entry.get("removed"):
                continue
            topics_hex = [_0x(t) for t in entry["topics"]]
            if len(topics_hex) != 3:
                continue  # not an ERC-20 Transfer (ERC-721 indexes the token id as well)
            sender, receiver = "0x" + topics_hex[1][-40:], "0x" + topics_hex[2][-40:]
            amount = int.from_bytes(HexBytes(entry["data"]), "big")
            symbol = tokens[str(entry["address"]).lower()]
            block_number, block_hash = int(entry["blockNumber"]), _0x(entry["blockHash"])
            if sender in accounts:
                found.append(
                    ObservedTransfer(
                        tx_hash=tx_hash,
                        account=accounts[sender],
                        asset=symbol,
                        direction="OUT",
                        amount=amount,
                        event_key=f"log:{index}",
                        counterparty=to_checksum_address(receiver),
                        block_number=block_number,
                        block_hash=block_hash,
                    )
                )
            if receiver in accounts:
                found.append(
                    ObservedTransfer(
                        tx_hash=tx_hash,
                        account=accounts[receiver],
                        asset=symbol,
                        direction="IN",
                        amount=amount,
                        event_key=f"log:{index}",
                        counterparty=to_checksum_address(sender),
                        block_number=block_number,
                        block_hash=block_hash,
                    )
                )
        return found

    async def ledger_balance(self, account: str, asset: AssetSpec, point: HistoryPoint) -> int:
        block: BlockIdentifier = point.block_number if point.block_number is not None else "latest"
        if asset.is_native:
            return int(await self._call(self.web3.eth.get_balance(_address(account), block)))
        return int(await self._call(self._token(asset).functions.balanceOf(account).call(block_identifier=block)))

    async def recheck_landed(self, tx_hash: str, block_number: int | None, reorg_depth: int) -> LandedCheck:
        """The receipt must still exist in a canonical block (same hash at its height) with
        status 1. Final: at or below the node's finalized block, else `reorg_depth` deep."""
        receipt = await self._receipt(tx_hash)
        if receipt is None:
            return LandedCheck("MISSING", "no receipt: the transaction is not on the chain (reorged away or dropped)")
        mined_in = int(receipt["blockNumber"])
        canonical = await self._block_or_none(mined_in)
        if canonical is None or _0x(canonical["hash"]) != _0x(receipt["blockHash"]):
            return LandedCheck("MISSING", f"block {mined_in} of the receipt is no longer canonical (reorg)")
        if int(receipt["status"]) != 1:
            return LandedCheck("FAILED", f"reverted in block {mined_in}")
        finalized = await self._finalized_block_number()
        if finalized is not None:
            final = finalized >= mined_in
        else:
            head = int(await self._call(self.web3.eth.block_number))
            final = head - mined_in + 1 >= max(reorg_depth, self.settings.confirmations)
        return LandedCheck("FINAL" if final else "NOT_FINAL", f"block {mined_in}")

    async def consumed_slots(self, account: str, point: HistoryPoint) -> int:
        block: BlockIdentifier = point.block_number if point.block_number is not None else "latest"
        return int(await self._call(self.web3.eth.get_transaction_count(_address(account), block)))

    async def side_costs(self, tx_hash: str, payer: str) -> None:
        return None  # gas is the whole cost: gasUsed x effectiveGasPrice, the fee custody records

    def account_of(self, destination: str) -> str:
        return to_checksum_address(destination)


# --- reconciliation helpers (after the class: additions stay in one place) ---------------------
from collections.abc import Sequence  # noqa: E402
from datetime import datetime  # noqa: E402

from web3.exceptions import BlockNotFound  # noqa: E402

from chains.base import HistoryChunk, HistoryPoint, LandedCheck, ObservedTransfer, OwnTransactions  # noqa: E402

BLOCKS_CURSOR = "blocks"
SCAN_BLOCKS = 500  # blocks per discovery step
BATCH_SIZE = 100  # blocks per JSON-RPC batch
LOG_FILTER_ADDRESSES = 200  # addresses per eth_getLogs topic filter
REORG_REWIND_BLOCKS = 128  # a reorg at the cursor rescans this far back
SCAN_CLOCK_MARGIN_SECONDS = 300  # node clock vs database clock


def _0x(value: Any) -> str:
    """A hash as lowercase 0x-hex, whatever web3 handed back (HexBytes, bytes or str)."""
    if isinstance(value, str):
        return value.lower() if value.startswith("0x") else "0x" + value.lower()
    return HexBytes(value).to_0x_hex()
