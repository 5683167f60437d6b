"""Solana family over solana-py's AsyncClient (JSON-RPC) and solders (building, signing).

The slot is the signed message itself (NOTES section 1): it cannot be replaced in place, the same
bytes are re-sent (``maxRetries=0``, every ``fee_bump_after_seconds``) until they land, and a new
transaction for the same withdrawal may be signed only once the attempt is provably dead: no
status for any attempt signature (``searchTransactionHistory``) while the *finalized* block
height is past every attempt's ``lastValidBlockHeight``.

Fees: 5,000 lamports per signature + ceil(CU price x CU limit / 1e6) (NOTES section 3); an SPL
transfer to a recipient without an associated token account also pays that account's rent,
which is asked of the node (``getMinimumBalanceForRentExemption``), never hard-coded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from typing import Any, ClassVar

import httpx2
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Commitment, Confirmed, Finalized
from solana.rpc.core import RPCException, RPCNoResultException
from solana.rpc.models import TxOpts
from solders.compute_budget import ID as COMPUTE_BUDGET_PROGRAM_ID
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.system_program import ID as SYSTEM_PROGRAM_ID
from solders.system_program import TransferParams, transfer
from solders.transaction import Transaction
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
)
from spl.memo.constants import MEMO_PROGRAM_ID
from spl.token.constants import ASSOCIATED_TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID
from spl.token.instructions import (
    close_account,
    create_idempotent_associated_token_account,
    get_associated_token_address,
    mint_to_checked,
    transfer_checked,
)
from spl.token.models import CloseAccountParams, MintToCheckedParams, TransferCheckedParams

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
    BelowAccountMinimum,
    ChainUnavailable,
    InsufficientFunds,
    InvalidAmount,
    InvalidMemo,
    InvalidRecipient,
    NotAvailable,
    PermanentError,
    PolicyViolation,
    SigningFailed,
    SubmissionFailed,
)
from core.money import to_decimal_string
from core.settings import AssetSpec, SolanaChainSettings
from models.payloads import OnChainState
from signers.base import KeyScheme

log = logging.getLogger(__name__)

LAMPORTS_PER_SIGNATURE = 5_000
MAX_MEMO_BYTES = 566
MAX_TRANSACTION_BYTES = 1_232  # packet data size: a larger transaction is refused by every node
TOKEN_ACCOUNT_LEN = 165
MINT_LEN = 82
TOKEN_PROGRAMS = (TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID)
RENT_CACHE_SECONDS = 600.0
# A blockhash is usable for this many blocks (lastValidBlockHeight = its height + 150).
MAX_PROCESSING_AGE = 150
# Sending to a program id burns the funds: refuse the ones a typo or a confused caller would use.
PROGRAM_IDS = frozenset(
    {
        SYSTEM_PROGRAM_ID,
        TOKEN_PROGRAM_ID,
        TOKEN_2022_PROGRAM_ID,
        ASSOCIATED_TOKEN_PROGRAM_ID,
        MEMO_PROGRAM_ID,
        Pubkey.from_string("ComputeBudget111111111111111111111111111111"),
        Pubkey.from_string("Vote111111111111111111111111111111111111111"),
        Pubkey.from_string("Stake11111111111111111111111111111111111111"),
        Pubkey.from_string("BPFLoaderUpgradeab1e11111111111111111111111"),
    }
)
# Token-2022: the account extension an ATA gets for a mint extension (type -> (type, length)).
# ImmutableOwner (type 7, no data) is always added to associated token accounts.
_ACCOUNT_EXTENSION_FOR_MINT_EXTENSION = {1: (2, 8), 9: (13, 0), 14: (15, 1), 26: (27, 0)}
_IMMUTABLE_OWNER_LEN = 0
# RPC errors that say "this node, now" rather than "this transaction": retry later.
_TRANSIENT_RPC_CODES = {-32004, -32005, -32007, -32014, -32016, 429, 503}


def _rank(status: TransactionConfirmationStatus) -> int:
    """processed < confirmed < finalized (solders' enum values are not hashable)."""
    if status == TransactionConfirmationStatus.Finalized:
        return 2
    return 1 if status == TransactionConfirmationStatus.Confirmed else 0


def _rpc_error(e: RPCException) -> tuple[str, Any, int | None]:
    """(message, transaction error or None, JSON-RPC code or None) of an RPC error reply."""
    parsed = e.args[0] if e.args else None
    message = str(getattr(parsed, "message", parsed if parsed is not None else e))
    data = getattr(parsed, "data", None)
    tx_err = getattr(data, "err", None)
    code = getattr(parsed, "code", None)
    return message, tx_err, code if isinstance(code, int) else None


def _logs(e: RPCException) -> list[str]:
    parsed = e.args[0] if e.args else None
    return list(getattr(getattr(parsed, "data", None), "logs", None) or [])


class SolanaChain:
    family: ClassVar[str] = "solana"
    key_scheme: ClassVar[KeyScheme] = "ed25519"
    replaceable_in_slot: ClassVar[bool] = False
    supports_channels: ClassVar[bool] = False
    queues_future_sequences: ClassVar[bool] = False
    mempool_visible: ClassVar[bool] = False
    has_trustlines: ClassVar[bool] = False  # token accounts are made for the recipient by the sender

    def __init__(self, name: str, settings: SolanaChainSettings, client: AsyncClient | None = None) -> None:
        self.name = name
        self.settings = settings
        self._injected = client
        # AsyncClient holds an HTTP pool bound to the loop that first used it: one per loop.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = weakref.WeakKeyDictionary()
        self._rent: dict[int, tuple[float, int]] = {}
        self._mints: dict[str, tuple[Pubkey, int, bytes]] = {}  # mint -> (token program, decimals, data)

    @property
    def commitment(self) -> Commitment:
        return Finalized if self.settings.commitment == "finalized" else Confirmed

    def _rpc(self) -> AsyncClient:
        if self._injected is not None:
            return self._injected
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = AsyncClient(self.settings.rpc_url, commitment=self.commitment, timeout=15)
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the HTTP pool of the running loop's client (not an injected one)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    async def _call(self, awaitable: Any, *, rpc_errors: bool = False) -> Any:
        """Await one RPC call. Connectivity problems become ChainUnavailable; so do error replies,
        unless `rpc_errors` asks for them (sendTransaction, requestAirdrop) and they are not
        a node's "not now" (unhealthy, behind, rate limited)."""
        try:
            return await awaitable
        except (TimeoutError, SolanaRpcException, httpx2.HTTPError, OSError) as e:
            raise ChainUnavailable(f"{self.name} RPC unreachable: {e}", chain=self.name) from e
        except RPCException as e:
            message, _, code = _rpc_error(e)
            if rpc_errors and code not in _TRANSIENT_RPC_CODES and "unhealthy" not in message.lower():
                raise
            raise ChainUnavailable(f"{self.name} RPC error: {message}", chain=self.name) from e

    # --- addresses and assets -------------------------------------------------------------
    @staticmethod
    def _pubkey(address: str) -> Pubkey:
        if not isinstance(address, str) or not 32 <= len(address) <= 44:
            raise InvalidRecipient("not a Solana address (base58 of 32 bytes)", address=str(address)[:64])
        try:
            key = Pubkey.from_string(address)
        except ValueError as e:
            raise InvalidRecipient("not a Solana address (base58 of 32 bytes)", address=address[:64]) from e
        if str(key) != address:
            raise InvalidRecipient("not a canonical base58 Solana address", address=address)
        return key

    def normalize_address(self, address: str) -> str:
        key = self._pubkey(address.strip() if isinstance(address, str) else address)
        if key == Pubkey.default() or key in PROGRAM_IDS:
            raise InvalidRecipient("this is a program id, not a wallet: funds sent there are lost", address=str(key))
        if not key.is_on_curve() and not self.settings.allow_off_curve_sol_destinations:
            # A program-derived address (a token account, a vault): no key signs for it. SOL sent
            # there is usually stranded, and a token withdrawal needs the wallet that owns the ATA.
            raise InvalidRecipient(
                "off-curve address (a program-derived address such as a token account): give the recipient's wallet address instead",
                address=str(key),
            )
        return str(key)

    def address_from_public_key(self, public_key: bytes) -> str:
        if len(public_key) != 32:
            raise SigningFailed("expected a 32-byte ed25519 public key")
        return str(Pubkey.from_bytes(public_key))

    def validate_memo(self, memo: Memo) -> Memo:
        if memo.kind != "text":
            raise InvalidMemo("Solana memos are text (Memo program); id and hash memos are not supported", kind=memo.kind)
        size = len(memo.value.encode("utf-8"))
        if not 0 < size <= MAX_MEMO_BYTES:
            raise InvalidMemo(f"a Solana memo is 1 to {MAX_MEMO_BYTES} bytes of UTF-8", size=size)
        return Memo("text", memo.value)

    def asset(self, symbol: str) -> AssetSpec:
        return self.settings.asset(symbol)

    def assets(self) -> list[AssetSpec]:
        return self.settings.assets()

    # --- reads -----------------------------------------------------------------------------
    async def _rent_exempt(self, size: int) -> int:
        cached = self._rent.get(size)
        now = time.monotonic()
        if cached is not None and now - cached[0] < RENT_CACHE_SECONDS:
            return cached[1]
        resp = await self._call(self._rpc().get_minimum_balance_for_rent_exemption(size, self.commitment))
        value = int(resp.value)
        self._rent[size] = (now, value)
        return value

    async def _account(self, key: Pubkey) -> Any | None:
        return (await self._call(self._rpc().get_account_info(key, self.commitment))).value

    async def _mint(self, asset: AssetSpec) -> tuple[Pubkey, int, bytes]:
        """(token program, decimals, mint data); the configured decimals must match the chain's."""
        assert asset.contract is not None
        cached = self._mints.get(asset.contract)
        if cached is None:
            cached = await self._load_mint(asset)
            self._mints[asset.contract] = cached  # a mint's program and decimals never change
        program, decimals, data = cached
        if decimals != asset.decimals:
            raise SubmissionFailed(
                f"configuration error: {asset.symbol} is configured with {asset.decimals} decimals, the mint has {decimals}",
                asset=asset.symbol,
            )
        return cached

    async def _load_mint(self, asset: AssetSpec) -> tuple[Pubkey, int, bytes]:
        assert asset.contract is not None
        try:
            mint = Pubkey.from_string(asset.contract)
        except ValueError as e:
            raise SubmissionFailed(f"configuration error: {asset.symbol} mint is not an address", asset=asset.symbol) from e
        account = await self._account(mint)
        if account is None:
            raise SubmissionFailed(f"configuration error: {asset.symbol} mint {mint} does not exist on {self.name}", asset=asset.symbol)
        data = bytes(account.data)
        if account.owner not in TOKEN_PROGRAMS or len(data) < MINT_LEN or not data[45]:
            raise SubmissionFailed(f"configuration error: {mint} is not an initialized SPL Token / Token-2022 mint", asset=asset.symbol)
        return account.owner, data[44], data

    @staticmethod
    def _token_account_len(program: Pubkey, mint_data: bytes) -> int:
        """Size of the associated token account the ATA program creates for this mint."""
        if program == TOKEN_PROGRAM_ID:
            return TOKEN_ACCOUNT_LEN
        size = TOKEN_ACCOUNT_LEN + 1 + 4 + _IMMUTABLE_OWNER_LEN  # account type byte + ImmutableOwner TLV
        offset = TOKEN_ACCOUNT_LEN + 1  # mint extensions: TLV after the padded base and the type byte
        while offset + 4 <= len(mint_data):
            kind = int.from_bytes(mint_data[offset : offset + 2], "little")
            length = int.from_bytes(mint_data[offset + 2 : offset + 4], "little")
            if kind == 0:
                break
            if kind in _ACCOUNT_EXTENSION_FOR_MINT_EXTENSION:
                size += 4 + _ACCOUNT_EXTENSION_FOR_MINT_EXTENSION[kind][1]
            offset += 4 + length
        return size

    async def preflight(self, intent: TransferIntent) -> None:
        destination = self._pubkey(intent.destination)
        if not destination.is_on_curve():
            if not intent.asset.is_native:
                raise InvalidRecipient(
                    "off-curve destination: a token withdrawal needs the owner's wallet address, "
                    "not a token account or another program-derived address",
                    address=intent.destination,
                )
            if not self.settings.allow_off_curve_sol_destinations:
                raise InvalidRecipient(
                    "off-curve destination (a program-derived address): SOL sent there may be unrecoverable",
                    address=intent.destination,
                )
        if intent.asset.is_native:
            await self.check_account_minimum(intent.destination, intent.asset, intent.amount)
            return
        await self._mint(intent.asset)

    async def check_account_minimum(self, destination: str, asset: AssetSpec, amount: int) -> None:
        """SOL to an account without lamports creates it: below the rent-exempt minimum the
        runtime refuses the transfer (InsufficientFundsForRent). Tokens go to an associated
        token account the sender pays for: no minimum."""
        if not asset.is_native:
            return
        account = await self._account(self._pubkey(destination))
        if account is None or account.lamports == 0:
            minimum = await self._rent_exempt(0)
            if amount < minimum:
                raise BelowAccountMinimum(
                    f"the destination account does not exist yet: the first transfer must be at least "
                    f"the rent-exempt minimum of {minimum} lamports ({to_decimal_string(minimum, 9)} SOL)",
                    address=destination,
                    minimum=str(minimum),
                )

    async def account_exists(self, address: str) -> bool:
        return await self._account(Pubkey.from_string(address)) is not None

    async def balance(self, address: str, asset: AssetSpec) -> int:
        owner = Pubkey.from_string(address)
        if asset.is_native:
            lamports = int((await self._call(self._rpc().get_balance(owner, self.commitment))).value)
            # The sender's own account stays rent-exempt: only what is above that is spendable.
            return max(lamports - await self._rent_exempt(0), 0)
        program, _, _ = await self._mint(asset)
        assert asset.contract is not None
        ata = get_associated_token_address(owner, Pubkey.from_string(asset.contract), program)
        account = await self._account(ata)
        if account is None or account.owner != program or len(bytes(account.data)) < TOKEN_ACCOUNT_LEN:
            return 0
        return int.from_bytes(bytes(account.data)[64:72], "little")

    def _priority_fee(self) -> int:
        return math.ceil(self.settings.compute_unit_price_micro_lamports * self.settings.compute_unit_limit / 1_000_000)

    async def _ata_rent_if_missing(self, intent: TransferIntent) -> int:
        if intent.asset.is_native:
            return 0
        program, _, mint_data = await self._mint(intent.asset)
        assert intent.asset.contract is not None
        ata = get_associated_token_address(Pubkey.from_string(intent.destination), Pubkey.from_string(intent.asset.contract), program)
        if await self._account(ata) is not None:
            return 0
        return await self._rent_exempt(self._token_account_len(program, mint_data))

    async def estimate_max_fee(self, intent: TransferIntent, signatures: int = 1) -> int:
        """Network fee plus, for a token transfer to a recipient without an ATA, that account's rent
        (the sender pays it: it leaves the sender's SOL like a fee)."""
        if intent.sweep and intent.fee is not None:
            return intent.fee  # fixed with the amount when the sweep was reserved
        return LAMPORTS_PER_SIGNATURE * signatures + self._priority_fee() + await self._ata_rent_if_missing(intent)

    async def _token_accounts(self, owner: Pubkey) -> list[tuple[AssetSpec, Pubkey, int, Pubkey, int, int]]:
        """The owner's associated token accounts of the configured tokens that exist:
        (asset, token program, decimals, ATA, token amount, ATA lamports)."""
        found = []
        for asset in self.assets():
            if asset.is_native:
                continue
            program, decimals, _ = await self._mint(asset)
            assert asset.contract is not None
            ata = get_associated_token_address(owner, Pubkey.from_string(asset.contract), program)
            account = await self._account(ata)
            if account is None or account.owner != program or len(bytes(account.data)) < TOKEN_ACCOUNT_LEN:
                continue
            amount = int.from_bytes(bytes(account.data)[64:72], "little")
            found.append((asset, program, decimals, ata, amount, int(account.lamports)))
        return found

    async def sweep_quote(self, intent: TransferIntent) -> SweepQuote:
        """Every lamport of the sender (the rent-exempt minimum included: the account is emptied
        and disappears) plus the lamports of its token accounts, which the sweep empties into the
        destination's ATAs and closes first; minus the exact fee: the signature, the priority fee
        and the rent of any destination ATA the sweep has to create."""
        if not intent.asset.is_native:
            raise PermanentError("a sweep moves the native asset (token accounts go with it)", asset=intent.asset.symbol)
        sender, destination = Pubkey.from_string(intent.sender), Pubkey.from_string(intent.destination)
        lamports = int((await self._call(self._rpc().get_balance(sender, self.commitment))).value)
        fee = LAMPORTS_PER_SIGNATURE + self._priority_fee()
        for asset, program, _, _, amount, ata_lamports in await self._token_accounts(sender):
            lamports += ata_lamports
            if amount > 0:
                _, _, mint_data = await self._mint(asset)
                assert asset.contract is not None
                target = get_associated_token_address(destination, Pubkey.from_string(asset.contract), program)
                if await self._account(target) is None:
                    fee += await self._rent_exempt(self._token_account_len(program, mint_data))
        return SweepQuote(amount=lamports - fee, fee=fee)

    async def _sweep_instructions(self, intent: TransferIntent) -> list[Instruction]:
        sender, destination = Pubkey.from_string(intent.sender), Pubkey.from_string(intent.destination)
        instructions = [set_compute_unit_limit(self.settings.compute_unit_limit)]
        if self.settings.compute_unit_price_micro_lamports > 0:
            instructions.append(set_compute_unit_price(self.settings.compute_unit_price_micro_lamports))
        for asset, program, decimals, ata, amount, _ in await self._token_accounts(sender):
            assert asset.contract is not None
            mint = Pubkey.from_string(asset.contract)
            if amount > 0:
                instructions.append(create_idempotent_associated_token_account(sender, destination, mint, program))
                instructions.append(
                    transfer_checked(
                        TransferCheckedParams(
                            program_id=program,
                            source=ata,
                            mint=mint,
                            dest=get_associated_token_address(destination, mint, program),
                            owner=sender,
                            amount=amount,
                            decimals=decimals,
                        )
                    )
                )
            # The emptied token account's rent comes back to the sender, and leaves with the SOL.
            instructions.append(close_account(CloseAccountParams(program_id=program, account=ata, dest=sender, owner=sender)))
        instructions.append(transfer(TransferParams(from_pubkey=sender, to_pubkey=destination, lamports=intent.amount)))
        return instructions

    async def next_sequence(self, sender: str, highest_claimed: int | None) -> None:
        return None

    async def settled_sequence(self, sender: str) -> None:
        return None

    # --- signing ---------------------------------------------------------------------------
    async def _instructions(self, intent: TransferIntent) -> list[Instruction]:
        sender = Pubkey.from_string(intent.sender)
        destination = Pubkey.from_string(intent.destination)
        instructions = [set_compute_unit_limit(self.settings.compute_unit_limit)]
        if self.settings.compute_unit_price_micro_lamports > 0:
            instructions.append(set_compute_unit_price(self.settings.compute_unit_price_micro_lamports))
        if intent.asset.is_native:
            instructions.append(transfer(TransferParams(from_pubkey=sender, to_pubkey=destination, lamports=intent.amount)))
        else:
            program, decimals, _ = await self._mint(intent.asset)
            assert intent.asset.contract is not None
            mint = Pubkey.from_string(intent.asset.contract)
            instructions.append(create_idempotent_associated_token_account(sender, destination, mint, program))
            instructions.append(
                transfer_checked(
                    TransferCheckedParams(
                        program_id=program,
                        source=get_associated_token_address(sender, mint, program),
                        mint=mint,
                        dest=get_associated_token_address(destination, mint, program),
                        owner=sender,
                        amount=intent.amount,
                        decimals=decimals,
                    )
                )
            )
        if intent.memo is not None:
            memo = self.validate_memo(intent.memo)
            instructions.append(
                Instruction(
                    program_id=MEMO_PROGRAM_ID,
                    accounts=[AccountMeta(pubkey=sender, is_signer=True, is_writable=False)],
                    data=memo.value.encode("utf-8"),
                )
            )
        return instructions

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
        sender = Pubkey.from_string(intent.sender)
        instructions = await (self._sweep_instructions(intent) if intent.sweep else self._instructions(intent))
        latest = (await self._call(self._rpc().get_latest_blockhash(self.commitment))).value
        blockhash: Hash = latest.blockhash
        message = Message.new_with_blockhash(instructions, sender, blockhash)
        if message.header.num_required_signatures != 1:
            raise SigningFailed("a withdrawal must be signed by the wallet alone")
        await approve_before_signing(sign, bytes(message), bytes(message))
        raw_signature = await sign(bytes(message))
        if len(raw_signature) != 64:
            raise SigningFailed("ed25519 signer returned a malformed signature")
        signature = Signature.from_bytes(raw_signature)
        # Never persist bytes that would not verify against the wallet's key.
        if not signature.verify(sender, bytes(message)):
            raise SigningFailed("signature does not verify against the wallet address", address=intent.sender)
        tx = Transaction.populate(message, [signature])
        raw = bytes(tx)
        if len(raw) > MAX_TRANSACTION_BYTES:
            raise InvalidMemo(f"the transaction is {len(raw)} bytes, above Solana's {MAX_TRANSACTION_BYTES}: shorten the memo")
        max_fee = await self.estimate_max_fee(intent, signatures=message.header.num_required_signatures)
        return SignedTransfer(
            tx_hash=str(signature),
            raw_tx=raw.hex(),
            sequence=None,
            max_fee=max_fee,
            fee_params={
                "blockhash": str(blockhash),
                "last_valid_block_height": int(latest.last_valid_block_height),
                "commitment": self.settings.commitment,
                "compute_unit_limit": self.settings.compute_unit_limit,
                "compute_unit_price_micro_lamports": self.settings.compute_unit_price_micro_lamports,
            },
        )

    def describe_unsigned(self, unsigned: bytes) -> SigningRequest:
        """A legacy message decoded with solders: compute-budget settings, a system transfer,
        SPL `transfer_checked` to a token account created idempotently in the same message (so
        its owner is known and checked by derivation), closing an emptied token account back to
        its owner, a memo. Any other program or instruction is refused."""
        try:
            message = Message.from_bytes(unsigned)
        except Exception as e:
            raise PolicyViolation(f"not a Solana message: {type(e).__name__}") from e
        if bytes(message) != unsigned:
            raise PolicyViolation("the message does not re-serialize to the same bytes")
        keys = list(message.account_keys)
        payer = str(keys[0])
        signatures = message.header.num_required_signatures
        cu_limit, cu_price = 200_000, 0
        movements: list[Movement] = []
        side_effects: list[str] = []
        memo: Memo | None = None
        token_account_owner: dict[str, str] = {}
        transfers: list[tuple[str, str, str, int]] = []  # (mint, source authority, token account, amount)

        def account(ix: Any, i: int) -> str:
            if i >= len(ix.accounts):
                raise PolicyViolation("an instruction is missing accounts")
            return str(keys[ix.accounts[i]])

        for ix in message.instructions:
            program, data = keys[ix.program_id_index], bytes(ix.data)
            if program == COMPUTE_BUDGET_PROGRAM_ID and data[:1] == b"\x02" and len(data) == 5:
                cu_limit = int.from_bytes(data[1:5], "little")
                side_effects.append(f"compute unit limit {cu_limit}")
            elif program == COMPUTE_BUDGET_PROGRAM_ID and data[:1] == b"\x03" and len(data) == 9:
                cu_price = int.from_bytes(data[1:9], "little")
                side_effects.append(f"compute unit price {cu_price}")
            elif program == SYSTEM_PROGRAM_ID and data[:4] == (2).to_bytes(4, "little") and len(data) == 12:
                movements.append(Movement(None, account(ix, 0), account(ix, 1), int.from_bytes(data[4:12], "little")))
            elif program == ASSOCIATED_TOKEN_PROGRAM_ID and data in (b"", b"\x01"):
                funder, ata, owner, mint, token_program = (account(ix, i) for i in (0, 1, 2, 3, 5))
                derived = get_associated_token_address(Pubkey.from_string(owner), Pubkey.from_string(mint), Pubkey.from_string(token_program))
                if str(derived) != ata or funder != payer:
                    raise PolicyViolation("a token account creation that is not the owner's associated account")
                token_account_owner[ata] = owner
                side_effects.append(f"create {owner}'s token account for {mint}")
            elif program in TOKEN_PROGRAMS and data[:1] == b"\x0c" and len(data) == 10:
                source, mint, destination, authority = (account(ix, i) for i in range(4))
                transfers.append((mint, authority, destination, int.from_bytes(data[1:9], "little")))
            elif program in TOKEN_PROGRAMS and data == b"\x09":
                closed, rent_to, owner = (account(ix, i) for i in range(3))
                if rent_to != owner:
                    raise PolicyViolation("closing a token account sends its rent to someone else")
                side_effects.append(f"close {owner}'s token account {closed}")
            elif program == MEMO_PROGRAM_ID:
                try:
                    memo = Memo("text", data.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise PolicyViolation("a memo that is not UTF-8") from e
            else:
                raise PolicyViolation(f"an instruction of program {program} is never part of our transfers")
        for mint, authority, destination, amount in transfers:
            proven_owner = token_account_owner.get(destination)
            if proven_owner is None:
                raise PolicyViolation("a token transfer to an account whose owner the message does not prove")
            movements.append(Movement(mint, authority, proven_owner, amount))
        max_fee = LAMPORTS_PER_SIGNATURE * signatures + math.ceil(cu_price * cu_limit / 1_000_000)
        return SigningRequest(
            message=unsigned,
            fee_payer=payer,
            sequence=None,
            max_fee=max_fee,
            fee_within_cap=cu_price <= self.settings.compute_unit_price_micro_lamports and cu_limit <= self.settings.compute_unit_limit,
            movements=tuple(movements),
            memo=memo,
            side_effects=tuple(side_effects),
        )

    # --- broadcast and outcome -------------------------------------------------------------
    async def broadcast(self, transfer: SignedTransfer) -> str:
        # Preflight against the bank the blockhash came from; the node must not retry on its
        # own (maxRetries=0): the workflow re-sends these same bytes until they land or expire.
        opts = TxOpts(skip_preflight=False, preflight_commitment=self.commitment, max_retries=0)
        try:
            await self._call(self._rpc().send_raw_transaction(bytes.fromhex(transfer.raw_tx), opts), rpc_errors=True)
            return "accepted"
        except RPCNoResultException as e:
            raise ChainUnavailable(f"{self.name} send returned no result: {e}", chain=self.name) from e
        except RPCException as e:
            return self._classify_send_error(e)

    def _classify_send_error(self, e: RPCException) -> str:
        message, tx_err, _ = _rpc_error(e)
        lowered = message.lower()
        if tx_err == TransactionErrorFieldless.AlreadyProcessed or "already been processed" in lowered:
            return "known"
        if tx_err == TransactionErrorFieldless.BlockhashNotFound or "blockhash not found" in lowered:
            # Not proof of expiry (a lagging node, or a blockhash it has not seen yet):
            # transfer_status decides from the finalized block height.
            return "blockhash_not_found"
        if tx_err in (TransactionErrorFieldless.InsufficientFundsForFee, TransactionErrorFieldless.AccountNotFound) or (
            isinstance(tx_err, TransactionErrorInsufficientFundsForRent)
        ):
            raise InsufficientFunds(f"refused in simulation: {message}", chain=self.name)
        if isinstance(tx_err, TransactionErrorInstructionError):
            logs = " ".join(_logs(e)).lower()
            if "insufficient lamports" in logs or "insufficient funds" in logs:
                raise InsufficientFunds(f"refused in simulation: {message}", chain=self.name)
            raise SubmissionFailed(f"refused in simulation (not applied): {message}", chain=self.name)
        raise SubmissionFailed(message, chain=self.name)

    async def _statuses(self, signatures: list[Signature]) -> list[Any]:
        resp = await self._call(self._rpc().get_signature_statuses(signatures, search_transaction_history=True))
        return list(resp.value)

    async def is_known(self, tx_hash: str) -> bool:
        return (await self._statuses([Signature.from_string(tx_hash)]))[0] is not None

    def _is_final(self, status: Any) -> bool:
        level = status.confirmation_status
        if level is None:  # old nodes: no confirmations count means rooted (finalized)
            level = TransactionConfirmationStatus.Finalized if status.confirmations is None else TransactionConfirmationStatus.Processed
        wanted = TransactionConfirmationStatus.Finalized if self.settings.commitment == "finalized" else TransactionConfirmationStatus.Confirmed
        return _rank(level) >= _rank(wanted)

    async def _fee_paid(self, signature: Signature) -> int:
        """The fee a landed transaction paid. Not readable now (the node failing, or not serving
        the transaction yet) is ChainUnavailable: a withdrawal never completes without its fee,
        which reconciliation would otherwise see as drift."""
        resp = await self._call(self._rpc().get_transaction(signature, commitment=self.commitment, max_supported_transaction_version=0))
        value = resp.value
        meta = value.transaction.meta if value is not None else None
        if meta is None:
            raise ChainUnavailable("the landed transaction's details are not served yet", chain=self.name)
        return int(meta.fee)

    async def transfer_status(self, intent: TransferIntent, attempts: list[SignedTransfer]) -> TransferStatus:
        if not attempts:
            return TransferStatus(OnChainState.PENDING, detail="no attempt yet")
        # Read the finalized height before the statuses: if it is already past every attempt's
        # window, anything of ours that ever landed is finalized and the statuses below show it.
        finalized_height = int((await self._call(self._rpc().get_block_height(Finalized))).value)
        signatures = [Signature.from_string(a.tx_hash) for a in attempts]
        statuses = await self._statuses(signatures)
        landed = [(a, sig, st) for a, sig, st in zip(attempts, signatures, statuses, strict=True) if st is not None]
        for attempt, signature, st in landed:
            if not self._is_final(st):
                continue
            if st.err is None:
                return TransferStatus(
                    OnChainState.CONFIRMED,
                    tx_hash=attempt.tx_hash,
                    block_number=int(st.slot),
                    fee_paid=await self._fee_paid(signature),
                )
            return TransferStatus(
                OnChainState.REVERTED,
                tx_hash=attempt.tx_hash,
                block_number=int(st.slot),
                fee_paid=await self._fee_paid(signature),
                detail=f"transaction failed on chain: {st.err}",
            )
        if landed:
            attempt, _, st = landed[-1]
            # Landed, not yet at the configured commitment: never re-send or re-sign now.
            return TransferStatus(
                OnChainState.PENDING,
                tx_hash=attempt.tx_hash,
                block_number=int(st.slot),
                detail=f"landed in slot {st.slot}, awaiting {self.settings.commitment}",
            )
        windows = [a.fee_params.get("last_valid_block_height") for a in attempts]
        heights = [w for w in windows if isinstance(w, int)]
        every_window_known = len(heights) == len(windows)
        if every_window_known and finalized_height > max(heights):
            return TransferStatus(
                OnChainState.EXPIRED,
                tx_hash=attempts[-1].tx_hash,
                detail=f"finalized block height {finalized_height} is past every attempt's "
                f"lastValidBlockHeight (latest {max(heights)}) and no attempt landed",
            )
        if every_window_known and finalized_height + MAX_PROCESSING_AGE < min(heights) - MAX_PROCESSING_AGE:
            # The chain's height went back more than a blockhash's whole lifetime below where we
            # signed: the network was reset (a restarted test validator, a cluster restarted from
            # genesis). Our blockhashes belong to a chain that no longer exists; heights would
            # take days to pass them again, and no signature of ours is known on this one.
            return TransferStatus(
                OnChainState.EXPIRED,
                tx_hash=attempts[-1].tx_hash,
                detail=f"finalized block height {finalized_height} is far below where the attempts were "
                f"signed (lastValidBlockHeight {min(heights)}): the network was reset",
            )
        return TransferStatus(OnChainState.PENDING, detail="not landed yet")

    # --- test networks only ---------------------------------------------------------------
    async def faucet(self, address: str, asset: AssetSpec, amount: int | None) -> Funding:
        """SOL by airdrop; a configured test token minted by its mint authority
        (`faucet_token_authority`) into the owner's associated token account."""
        if amount is None:
            raise InvalidAmount("amount is required: how much to fund", asset=asset.symbol)
        owner = Pubkey.from_string(address)
        if asset.is_native:
            try:
                signature = (await self._call(self._rpc().request_airdrop(owner, amount, self.commitment), rpc_errors=True)).value
            except RPCException as e:
                raise SubmissionFailed(f"airdrop refused: {_rpc_error(e)[0]}", chain=self.name) from e
        else:
            signature = await self._mint_test_tokens(owner, asset, amount)
        await self._await_faucet(signature)
        return Funding(str(signature), amount)

    async def _mint_test_tokens(self, owner: Pubkey, asset: AssetSpec, amount: int) -> Signature:
        secret = self.settings.faucet_token_authority
        if secret is None:
            raise NotAvailable(f"no mint authority is configured for {asset.symbol} on {self.name}", asset=asset.symbol)
        try:
            authority = Keypair.from_base58_string(secret.get_secret_value())
        except ValueError as e:
            raise NotAvailable("faucet_token_authority is not a base58 keypair", chain=self.name) from e
        program, decimals, _ = await self._mint(asset)
        assert asset.contract is not None
        mint = Pubkey.from_string(asset.contract)
        instructions = [
            create_idempotent_associated_token_account(authority.pubkey(), owner, mint, program),
            mint_to_checked(
                MintToCheckedParams(
                    program_id=program,
                    mint=mint,
                    dest=get_associated_token_address(owner, mint, program),
                    mint_authority=authority.pubkey(),
                    amount=amount,
                    decimals=decimals,
                )
            ),
        ]
        latest = (await self._call(self._rpc().get_latest_blockhash(self.commitment))).value
        tx = Transaction.new_signed_with_payer(instructions, authority.pubkey(), [authority], latest.blockhash)
        try:
            sent = await self._call(self._rpc().send_raw_transaction(bytes(tx), TxOpts(preflight_commitment=self.commitment)), rpc_errors=True)
        except RPCException as e:
            raise SubmissionFailed(f"minting {asset.symbol} refused: {_rpc_error(e)[0]}", chain=self.name) from e
        signature: Signature = sent.value  # solana-py's SendTransactionResp
        return signature

    async def _await_faucet(self, signature: Signature) -> None:
        deadline = time.monotonic() + 30
        while True:
            st = (await self._statuses([signature]))[0]
            if st is not None and st.err is not None:
                raise SubmissionFailed(f"funding failed on chain: {st.err}", chain=self.name)
            if st is not None and (
                st.confirmation_status in (TransactionConfirmationStatus.Confirmed, TransactionConfirmationStatus.Finalized)
                or (st.confirmation_status is None and st.confirmations is None)
            ):
                return
            if time.monotonic() > deadline:
                raise ChainUnavailable("funding not confirmed within 30 s", chain=self.name, tx_hash=str(signature))
            await asyncio.sleep(min(self.settings.poll_interval_seconds, 0.5))

    # --- reconciliation (chains.base.ChainHistory) ------------------------------------------
    async def history_point(self) -> HistoryPoint:
        # No historical reads: balances and history both at HISTORY_COMMITMENT, so what a
        # balance shows, the history lists. A transfer landed there but not yet final is
        # a withdrawal still in flight, not drift.
        return HistoryPoint()

    async def _history_scopes(self, accounts: Sequence[str]) -> list[tuple[str, str]]:
        """(address to list, wallet): each wallet, and its token account of each configured
        token (a transfer into an existing token account does not name the wallet)."""
        scopes = []
        tokens = [a for a in self.assets() if not a.is_native]
        for account in accounts:
            scopes.append((account, account))
            for asset in tokens:
                program, _, _ = await self._mint(asset)
                assert asset.contract is not None
                ata = get_associated_token_address(Pubkey.from_string(account), Pubkey.from_string(asset.contract), program)
                scopes.append((str(ata), account))
        return scopes

    async def _signatures_after(self, address: str, newest_seen: str | None) -> list[Any]:
        """Signatures of `address` newer than `newest_seen`, oldest first (getSignaturesForAddress
        answers newest first, at most 1000 a page: page back with `before`)."""
        until = Signature.from_string(newest_seen) if newest_seen else None
        before = None
        found: list[Any] = []
        while True:
            page = (
                await self._call(
                    self._rpc().get_signatures_for_address(
                        Pubkey.from_string(address), before=before, until=until, limit=SIGNATURES_PAGE, commitment=HISTORY_COMMITMENT
                    )
                )
            ).value
            found += page
            if len(page) < SIGNATURES_PAGE:
                return list(reversed(found))
            before = page[-1].signature

    async def _landed_transaction(self, signature: Signature) -> Any:
        resp = await self._call(
            self._rpc().get_transaction(signature, encoding="base64", commitment=HISTORY_COMMITMENT, max_supported_transaction_version=0)
        )
        if resp.value is None or resp.value.transaction.meta is None:
            raise ChainUnavailable(f"{self.name}: no transaction with status meta for {signature}", chain=self.name)
        return resp.value

    async def discover_transfers(
        self,
        accounts: Sequence[str],
        cursors: dict[str, str],
        point: HistoryPoint,
        since: datetime | None,
        ours: OwnTransactions,
    ) -> HistoryChunk:
        """New signatures of each wallet and token account (cursor: the newest one read), then
        each transaction's pre/post lamport and token balances: what entered or left the wallet.
        A transaction the wallet signed that is none of ours is a spend no withdrawal explains."""
        mints = {a.contract: a.symbol for a in self.assets() if not a.is_native}
        new_cursors = dict(cursors)
        transfers: dict[tuple[str, str, str, str, str], ObservedTransfer] = {}
        budget = TRANSACTIONS_PER_STEP
        for address, wallet in await self._history_scopes(accounts):
            statuses = await self._signatures_after(address, cursors.get(address))
            known = await ours([str(s.signature) for s in statuses])
            for status in statuses:
                if budget <= 0:
                    return HistoryChunk(list(transfers.values()), new_cursors, done=False)
                signature = str(status.signature)
                if signature not in known:
                    budget -= 1
                    landed = await self._landed_transaction(status.signature)
                    for found in self._movements(signature, landed, wallet, mints):
                        transfers[(found.tx_hash, found.account, found.asset, found.direction, found.event_key)] = found
                new_cursors[address] = signature
        return HistoryChunk(list(transfers.values()), new_cursors, done=True)

    def _movements(self, signature: str, landed: Any, wallet: str, mints: dict[str | None, str]) -> list[ObservedTransfer]:
        tx, meta = landed.transaction.transaction, landed.transaction.meta
        message = tx.message
        keys = [str(k) for k in message.account_keys]
        keys += [str(k) for k in meta.loaded_addresses.writable] + [str(k) for k in meta.loaded_addresses.readonly]
        signed_by_wallet = wallet in keys[: message.header.num_required_signatures]
        fee = int(meta.fee) if keys and keys[0] == wallet else 0
        slot = int(landed.slot)
        found: list[ObservedTransfer] = []
        native = self.settings.native_symbol
        # Value moved, the fee apart: lamports, then each configured token the wallet owns.
        deltas: list[tuple[str, str, int]] = []
        if wallet in keys:
            index = keys.index(wallet)
            deltas.append((native, "lamports", int(meta.post_balances[index]) - int(meta.pre_balances[index]) + fee))
        for mint, symbol in mints.items():
            before = sum(int(b.ui_token_amount.amount) for b in meta.pre_token_balances or [] if str(b.owner) == wallet and str(b.mint) == mint)
            after = sum(int(b.ui_token_amount.amount) for b in meta.post_token_balances or [] if str(b.owner) == wallet and str(b.mint) == mint)
            deltas.append((symbol, f"token:{mint}", after - before))
        payer = keys[0] if keys else None
        if signed_by_wallet:
            # Ours by key, not by any attempt: listed even when it moved nothing but its fee.
            moved_out = max(-deltas[0][2], 0) if deltas and deltas[0][0] == native else 0
            found.append(
                ObservedTransfer(
                    signature, wallet, native, "OUT", moved_out, "lamports", fee=fee, detail="signed by the wallet's key", block_number=slot
                )
            )
        for symbol, key, delta in deltas:
            if delta > 0:
                found.append(ObservedTransfer(signature, wallet, symbol, "IN", delta, key, counterparty=payer, block_number=slot))
            elif delta < 0 and not (signed_by_wallet and key == "lamports"):
                found.append(ObservedTransfer(signature, wallet, symbol, "OUT", -delta, key, counterparty=payer, block_number=slot))
        return found

    async def ledger_balance(self, account: str, asset: AssetSpec, point: HistoryPoint) -> int:
        owner = Pubkey.from_string(account)
        if asset.is_native:  # every lamport, the rent-exempt minimum included
            return int((await self._call(self._rpc().get_balance(owner, HISTORY_COMMITMENT))).value)
        program, _, _ = await self._mint(asset)
        assert asset.contract is not None
        ata = get_associated_token_address(owner, Pubkey.from_string(asset.contract), program)
        held = (await self._call(self._rpc().get_account_info(ata, HISTORY_COMMITMENT))).value
        if held is None or held.owner != program or len(bytes(held.data)) < TOKEN_ACCOUNT_LEN:
            return 0
        return int.from_bytes(bytes(held.data)[64:72], "little")

    async def recheck_landed(self, tx_hash: str, block_number: int | None, reorg_depth: int) -> LandedCheck:
        """getSignatureStatuses with history: gone (a fork dropped it) is MISSING; FINAL once
        the cluster finalized its slot."""
        status = (await self._statuses([Signature.from_string(tx_hash)]))[0]
        if status is None:
            return LandedCheck("MISSING", "no status for the signature, even in the transaction history")
        if status.err is not None:
            return LandedCheck("FAILED", f"failed in slot {status.slot}: {status.err}")
        finalized = status.confirmation_status == TransactionConfirmationStatus.Finalized or (
            status.confirmation_status is None and status.confirmations is None
        )
        return LandedCheck("FINAL" if finalized else "NOT_FINAL", f"slot {status.slot}")

    async def consumed_slots(self, account: str, point: HistoryPoint) -> None:
        return None  # the slot is the message itself: nothing numbered to account for

    async def side_costs(self, tx_hash: str, payer: str) -> int | None:
        """Rent the transaction put into token accounts it created (the recipient's ATA, paid
        by the sender), minus the rent of token accounts it closed back into the payer (a sweep)."""
        resp = await self._call(
            self._rpc().get_transaction(
                Signature.from_string(tx_hash), encoding="base64", commitment=HISTORY_COMMITMENT, max_supported_transaction_version=0
            )
        )
        if resp.value is None or resp.value.transaction.meta is None:
            return None  # not (or no longer) on the chain: nothing known to add
        meta = resp.value.transaction.meta
        created = {int(b.account_index) for b in meta.post_token_balances or []}
        closed = {int(b.account_index) for b in meta.pre_token_balances or []}
        rent = sum(int(meta.post_balances[i]) for i in created if int(meta.pre_balances[i]) == 0)
        refunded = sum(int(meta.pre_balances[i]) for i in closed if int(meta.post_balances[i]) == 0)
        return rent - refunded

    def account_of(self, destination: str) -> str:
        return str(Pubkey.from_string(destination))


# --- reconciliation helpers (after the class: additions stay in one place) ---------------------
from collections.abc import Sequence  # noqa: E402
from datetime import datetime  # noqa: E402

from chains.base import HistoryChunk, HistoryPoint, LandedCheck, ObservedTransfer, OwnTransactions  # noqa: E402

HISTORY_COMMITMENT = Confirmed  # reconciliation reads (history and balances alike)
SIGNATURES_PAGE = 1000  # getSignaturesForAddress's maximum
TRANSACTIONS_PER_STEP = 200  # getTransaction calls per discovery step
