"""The small interface every chain family implements, and its chain-neutral value types.

Exactly-once lives above this interface (activities persist each signed attempt before it
is broadcast); adapters only have to make each call honest about what it knows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol

from core.settings import AssetSpec, ChainSettingsBase
from models.payloads import OnChainState
from signers.base import KeyScheme


@dataclass(frozen=True)
class Memo:
    kind: str  # "text" | "id" | "hash"
    value: str


@dataclass(frozen=True)
class TransferIntent:
    sender: str
    destination: str
    asset: AssetSpec
    amount: int
    memo: Memo | None = None
    # Sweep: empty the sender into `destination` (native asset; on Solana its token accounts too).
    # `amount` and `fee` were fixed together when funds were reserved (amount = everything the
    # account holds - fee), and the transaction is built to cost exactly `fee`, leaving nothing.
    sweep: bool = False
    fee: int | None = None
    # Trustline: `sender` starts trusting `asset` so it can hold it (Stellar change_trust); no
    # value moves: amount 0, destination = sender. Only where `has_trustlines`.
    trustline: bool = False


@dataclass(frozen=True)
class SweepQuote:
    """What emptying an account moves (`amount`) and costs (`fee`, exact), in native base units."""

    amount: int
    fee: int


@dataclass(frozen=True)
class SignedTransfer:
    tx_hash: str
    raw_tx: str  # hex of the exact signed bytes
    sequence: int | None  # the slot: EVM nonce, Stellar sequence; None where the slot is the message
    max_fee: int  # the most this transaction can cost, in the native asset's base units
    fee_params: dict[str, Any] = field(default_factory=dict)
    purpose: str = "TRANSFER"  # or "CANCEL": this attempt replaces the transfer with a no-op


@dataclass(frozen=True)
class TransferStatus:
    state: OnChainState
    tx_hash: str | None = None
    block_number: int | None = None
    fee_paid: int | None = None
    detail: str = ""


class DigestSigner(Protocol):
    """Signs with one key held by a signer backend; the chain never sees key material."""

    async def __call__(self, message: bytes) -> bytes:
        """secp256k1: 32-byte digest in, 65 bytes r||s||recovery_id (low-s) out.
        ed25519: raw message in, 64-byte signature out. Raises SigningFailed / SignerUnavailable."""
        ...


# --- the signing guard: what a key is asked to sign, decoded by the chain's own library ---------
@dataclass(frozen=True)
class Funding:
    """What a test network's faucet paid: the transaction and the amount (base units), which
    is the faucet's own where it funds a fixed amount (Stellar's friendbot)."""

    tx_hash: str
    amount: int


@dataclass(frozen=True)
class Movement:
    """Value leaving `source` for `destination` (an owner address: a Solana token transfer is
    resolved to the owner of its destination token account). `asset`: the contract, mint or
    "CODE:ISSUER"; None for the native asset. `amount` None: everything the source holds (a
    Stellar account_merge)."""

    asset: str | None
    source: str
    destination: str
    amount: int | None


@dataclass(frozen=True)
class SigningRequest:
    """An unsigned transaction as the chain's library reads it, and the message a key must sign
    for exactly those bytes (EVM: the keccak signing hash; Solana: the message itself; Stellar:
    the network-bound transaction hash)."""

    message: bytes
    fee_payer: str  # whose sequence/nonce the transaction takes and who pays the fee
    sequence: int | None
    max_fee: int  # the most it can cost, native base units
    fee_within_cap: bool  # the fee rate is within the chain's configured cap
    movements: tuple[Movement, ...] = ()
    memo: Memo | None = None
    trustline: tuple[str, str] | None = None  # (asset, account) the account starts trusting (Stellar)
    # What else it does that moves no value of ours out: ATA creation for the recipient, closing
    # the sender's emptied token accounts, compute-budget settings. Anything not understood is
    # refused by the chain's decoder instead of being listed here.
    side_effects: tuple[str, ...] = ()


async def approve_before_signing(sign: DigestSigner, message: bytes, unsigned: bytes) -> None:
    """Adapters call this with the exact unsigned bytes before asking for a signature: a guarded
    signer (activities/signing_guard.py) decodes and checks them, and it refuses to sign any
    message it was not shown this way (fail closed). Plain signers have nothing to check."""
    check = getattr(sign, "check", None)
    if check is not None:
        await check(message, unsigned)


@dataclass(frozen=True)
class ChannelKey:
    """A channel account: the transaction's source (its sequence number and its fee) while the
    wallet stays the source of the payment; both sign. Only where `supports_channels`."""

    address: str
    sign: DigestSigner


class Chain(Protocol):
    family: ClassVar[str]
    key_scheme: ClassVar[KeyScheme]  # what the wallet keys of this chain are: the signer backends make and use them
    # True where a stuck transaction can be replaced inside its slot with a higher fee (EVM);
    # elsewhere "bumping" re-sends the same bytes until the attempt lands or provably expires.
    replaceable_in_slot: ClassVar[bool]
    # True where a transaction's source may be a channel account other than the paying wallet
    # (Stellar); the slot is then the channel's sequence, not the wallet's.
    supports_channels: ClassVar[bool]
    # True where an account must opt in to hold an asset (Stellar trustlines).
    has_trustlines: ClassVar[bool]
    # True where the node holds a transaction whose slot is ahead of the sender's next one until
    # the slots below are used (EVM nonces): a slot left unused stalls every later transaction,
    # so it must be filled. False where only the very next slot is accepted (Stellar: a claim
    # above the first free sequence is stale) or where there are no slots (Solana).
    queues_future_sequences: ClassVar[bool]
    # True where `is_known` also sees transactions waiting in the node's mempool: an unmined
    # attempt the node does not know was dropped (evicted, or reorged out) and is re-sent as is.
    mempool_visible: ClassVar[bool]
    name: str

    # Read-only here, so each adapter may hold its own settings subclass (EvmChainSettings, ...).
    @property
    def settings(self) -> ChainSettingsBase: ...

    def normalize_address(self, address: str) -> str:
        """Canonical form of a destination. Raises InvalidRecipient."""
        ...

    def address_from_public_key(self, public_key: bytes) -> str: ...

    def validate_memo(self, memo: Memo) -> Memo:
        """Canonical memo. Raises InvalidMemo (also where the chain carries no memos)."""
        ...

    def asset(self, symbol: str) -> AssetSpec:
        """Raises UnknownAsset."""
        ...

    async def preflight(self, intent: TransferIntent) -> None:
        """Destination-side checks before money is reserved: can it receive this transfer?
        Raises RecipientNoTrustline, MemoRequired, InvalidRecipient, ChainUnavailable."""
        ...

    async def check_account_minimum(self, destination: str, asset: AssetSpec, amount: int) -> None:
        """A read the API may make before accepting a withdrawal: a first payment to an account
        that does not exist yet must be at least what creates it (Solana: rent-exempt minimum,
        Stellar: 1 XLM; EVM: none). Raises BelowAccountMinimum, ChainUnavailable."""
        ...

    async def faucet(self, address: str, asset: AssetSpec, amount: int | None) -> Funding:
        """Test networks only: fund `address` with `amount` (None: where the faucet funds a fixed
        amount, which it then must be). Raises InvalidAmount, AlreadyFunded, NotAvailable,
        RecipientNoTrustline, SubmissionFailed, ChainUnavailable."""
        ...

    async def account_exists(self, address: str) -> bool:
        """Whether the chain holds this account yet: a Stellar account once created (>= 1 XLM),
        a Solana account once it holds lamports; an EVM address always."""
        ...

    async def balance(self, address: str, asset: AssetSpec) -> int:
        """Spendable balance in base units (minus any reserve the chain locks). Raises ChainUnavailable."""
        ...

    async def estimate_max_fee(self, intent: TransferIntent) -> int:
        """Upper bound of the fee, native base units. Raises ChainUnavailable, FeeAboveCap."""
        ...

    async def sweep_quote(self, intent: TransferIntent) -> SweepQuote:
        """Everything `intent.sender` holds minus the exact fee of the sweep transaction, counting
        what a chain otherwise keeps back (Solana rent-exempt minimum, Stellar reserves): the
        sweep leaves zero. EVM: legacy gasPrice x 21000; Solana: token accounts emptied and closed
        in the same transaction; Stellar: account_merge. Raises ChainUnavailable, PermanentError."""
        ...

    async def next_sequence(self, sender: str, highest_claimed: int | None) -> int | None:
        """The slot a new transaction from `sender` takes; never below the chain's pending one."""
        ...

    async def settled_sequence(self, sender: str) -> int | None:
        """First slot not yet consumed on chain; claims below it can never be reused."""
        ...

    async def sign_transfer(
        self,
        intent: TransferIntent,
        sequence: int | None,
        sign: DigestSigner,
        replacing: SignedTransfer | None = None,
        channel: ChannelKey | None = None,
    ) -> SignedTransfer:
        """Build and sign. With `replacing`, a fee-bumped replacement inside the same slot.
        With `channel` (supports_channels only), `sequence` is the channel's and it pays the fee;
        the result's `fee_params["source"]` names the account whose slot it takes.
        Raises ChainUnavailable, FeeAboveCap, InsufficientFunds, SigningFailed."""
        ...

    async def broadcast(self, transfer: SignedTransfer) -> str:
        """Send the exact bytes; idempotent. Returns "accepted", "known" or "slot_used".
        Raises ChainUnavailable (retry), FeeTooLow (replace), InsufficientFunds, SubmissionFailed."""
        ...

    async def is_known(self, tx_hash: str) -> bool:
        """Whether the node has seen this transaction (mempool or chain)."""
        ...

    async def transfer_status(self, intent: TransferIntent, attempts: list[SignedTransfer]) -> TransferStatus:
        """Final outcome across every attempt of one withdrawal (all share one slot), or PENDING."""
        ...

    def describe_unsigned(self, unsigned: bytes) -> SigningRequest:
        """Decode bytes about to be signed with the chain's own library. Raises PolicyViolation
        for anything it does not fully understand (an unknown program, operation or field)."""
        ...


# --- reconciliation: what the chain itself recorded ----------------------------------------------
@dataclass(frozen=True)
class HistoryPoint:
    """Where one reconciliation reads the chain. EVM: the last final block, so balances,
    nonces and discovered transfers are all read at that block. Chains without historical
    reads (Solana, Stellar) read their latest state at the configured commitment: None."""

    block_number: int | None = None
    block_hash: str | None = None


@dataclass(frozen=True)
class ObservedTransfer:
    """Value that moved into (IN) or out of (OUT) one of our accounts in a transaction that is
    none of custody's attempts: a deposit from outside, or a spend from our key that no
    withdrawal explains. `account` is the wallet address (an SPL token account is reported as
    its owner's); `fee` is the native fee the transaction charged `account` (OUT only)."""

    tx_hash: str
    account: str
    asset: str  # the asset symbol as configured on the chain
    direction: str  # "IN" | "OUT"
    amount: int  # base units, >= 0 (an OUT may move nothing and only pay a fee)
    event_key: str  # tells apart several movements of one transaction (log index, operation)
    fee: int = 0
    counterparty: str | None = None
    sequence: int | None = None  # the slot an OUT from our key consumed (EVM nonce, Stellar sequence)
    block_number: int | None = None  # EVM block, Solana slot, Stellar ledger
    block_hash: str | None = None  # EVM only: a reorg that replaces the block drops the row
    detail: str = ""


@dataclass(frozen=True)
class HistoryChunk:
    """One bounded step of discovery. Persist `transfers` and `cursors` together: the next call
    resumes from those cursors. `rewind_to_block` (EVM): a reorg replaced blocks already scanned;
    forget the observations of those blocks (>= this number) before storing the new ones."""

    transfers: list[ObservedTransfer]
    cursors: dict[str, str]
    done: bool
    rewind_to_block: int | None = None


@dataclass(frozen=True)
class LandedCheck:
    """A landed transaction re-read: FINAL (will not change any more), NOT_FINAL (there and
    successful, still within reorg reach), MISSING (no longer on the canonical chain) or FAILED
    (there, but not successful)."""

    state: str
    detail: str = ""


# Given transaction hashes, which of them are custody's own attempts (the caller asks the database).
OwnTransactions = Callable[[Sequence[str]], Awaitable[set[str]]]


class ChainHistory(Protocol):
    """Read-only history for reconciliation (activities/reconciliation.py). Every chain adapter
    implements it next to `Chain`; each method raises ChainUnavailable when the node cannot answer."""

    async def history_point(self) -> HistoryPoint:
        """Where this reconciliation reads (see HistoryPoint)."""
        ...

    async def discover_transfers(
        self,
        accounts: Sequence[str],
        cursors: dict[str, str],
        point: HistoryPoint,
        since: datetime | None,
        ours: OwnTransactions,
    ) -> HistoryChunk:
        """Transfers into or out of `accounts` since `cursors` (empty: since `since`, the first
        wallet's creation, or the account's first transaction) up to `point`, skipping our own
        attempts (`ours`). Bounded work per call: call again until `done`."""
        ...

    async def ledger_balance(self, account: str, asset: AssetSpec, point: HistoryPoint) -> int:
        """Everything `account` holds of `asset` at `point`: reserves and rent included (not
        the spendable figure of Chain.balance)."""
        ...

    async def recheck_landed(self, tx_hash: str, block_number: int | None, reorg_depth: int) -> LandedCheck:
        """Is this landed transaction still on the canonical chain, successful, and final yet?
        `reorg_depth`: where the chain has no finality of its own (EVM depth finality), how
        deep a block must be before nothing is expected to replace it."""
        ...

    async def consumed_slots(self, account: str, point: HistoryPoint) -> int | None:
        """EVM: how many nonces `account` has used at `point` (each needs an attempt of ours).
        None where slots are not numbered from zero per account."""
        ...

    async def side_costs(self, tx_hash: str, payer: str) -> int | None:
        """Native base units a successful transaction of ours took from `payer` beyond its amount
        and network fee (Solana: rent of accounts it created for the recipient, minus rent of
        token accounts it closed). None on chains without such costs."""
        ...

    def account_of(self, destination: str) -> str:
        """The account a destination credits, in the form wallets store their address
        (EVM checksum; a Stellar M... address credits its G... account)."""
        ...
