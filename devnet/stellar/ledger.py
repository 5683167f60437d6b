"""The devnet's ledger: validates and applies real Stellar transaction envelopes, closes ledgers.

Synchronous and HTTP-free; :mod:`devnet.stellar.app` wraps it for Horizon's API. All public
methods take an internal lock, so a test thread may call them while the server runs.

Model: a submitted transaction is validated against the open ledger's state (as stellar-core
does when it receives one) and, if valid, applied at once into the open ledger (fee, seq bump,
operations); it becomes visible to readers (accounts, /transactions/{hash}) when that ledger
closes. Rejected transactions (tx_bad_seq, tx_bad_auth, tx_too_late, tx_insufficient_fee, ...,
or tx_failed caused by an operation's *validity* check such as op_malformed / op_bad_auth)
change nothing; an applied transaction whose operation fails at apply time (op_no_trust,
op_underfunded, op_low_reserve, ...) consumes its fee and sequence number and is recorded with
successful=false.

Like stellar-core's transaction queue, the open ledger admits at most one transaction per
account: while it holds a transaction whose transaction source or fee source (the G account
behind a muxed source) is also a source of the new submission, that submission is answered
``try_again_later`` (core's TRY_AGAIN_LATER) and nothing changes; once the ledger closes the
same envelope can be submitted again. ``submit(..., queue_limit=False)`` skips the rule
(friendbot, which on a real network signs from its own channel accounts).

With a :class:`~devnet.stellar.persistence.LedgerStore`, each close is saved before the closed
ledger is visible, and a ledger built on the same store continues that network (``_restore``).
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from stellar_sdk import Keypair, StrKey
from stellar_sdk import xdr as x
from stellar_sdk.exceptions import BadSignatureError

from .codec import (
    INT64_MAX,
    STROOPS_PER_XLM,
    AssetKey,
    InvalidAsset,
    Muxed,
    account_id_to_str,
    asset_from_xdr,
    b64,
    muxed_from_xdr,
    sha256,
    signer_key_to_str,
    str_to_signer_key,
    toid,
)
from .persistence import LedgerStore, Network, SavedLedger
from .results import (
    SUPPORTED_OPS,
    TX_CODE_NAMES,
    TxCode,
    inner_tx_result,
    op_generic,
    op_inner,
    op_succeeded,
    tx_result,
)
from .state import (
    ACCOUNT_FLAGS_MASK,
    AUTH_CLAWBACK_ENABLED,
    AUTH_IMMUTABLE,
    AUTH_REQUIRED,
    AUTH_REVOCABLE,
    TL_AUTHORIZED,
    TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES,
    TL_CLAWBACK_ENABLED,
    TL_FLAGS_MASK,
    Account,
    ChangeLog,
    DataEntry,
    Signer,
    Store,
    TrustLine,
    Txn,
    account_key,
    changes_xdr,
    data_key,
    key_of,
    trustline_key,
)

DEFAULT_NETWORK_PASSPHRASE = "Custody Devnet ; 2026"
TOTAL_COINS = 100_000_000_000 * STROOPS_PER_XLM
DEFAULT_BASE_FEE = 100
DEFAULT_BASE_RESERVE = 5_000_000  # 0.5 XLM
PROTOCOL_VERSION = 23
MAX_OPS_PER_TX = 100
MAX_SUBENTRIES = 1000
MAX_SIGNERS = 20

OpT = x.OperationType
ET = x.EnvelopeType

PAYMENT_OP_TYPES = frozenset(
    {
        OpT.CREATE_ACCOUNT,
        OpT.PAYMENT,
        OpT.PATH_PAYMENT_STRICT_RECEIVE,
        OpT.PATH_PAYMENT_STRICT_SEND,
        OpT.ACCOUNT_MERGE,
    }
)


class MalformedEnvelope(ValueError):
    """The submitted text is not a base64 TransactionEnvelope."""


@dataclass
class ParsedTx:
    envelope: x.TransactionEnvelope
    envelope_xdr: str
    hash: bytes  # what the network calls the transaction: the fee bump's hash for fee bumps
    tx: x.Transaction  # the (inner) transaction, V0 envelopes converted to V1
    tx_hash: bytes
    signatures: list[x.DecoratedSignature]
    fee_bump: x.FeeBumpTransaction | None = None
    fee_bump_signatures: list[x.DecoratedSignature] = field(default_factory=list)

    @property
    def hash_hex(self) -> str:
        return self.hash.hex()

    @property
    def tx_source(self) -> Muxed:
        return muxed_from_xdr(self.tx.source_account)

    @property
    def fee_source(self) -> Muxed:
        return muxed_from_xdr(self.fee_bump.fee_source) if self.fee_bump else self.tx_source


def _payload_hash(network_id: bytes, tagged: x.TransactionSignaturePayloadTaggedTransaction) -> bytes:
    return sha256(x.TransactionSignaturePayload(x.Hash(network_id), tagged).to_xdr_bytes())


def parse_envelope(envelope_b64: str, network_id: bytes) -> ParsedTx:
    try:
        raw = base64.b64decode(envelope_b64.strip(), validate=True)
        env = x.TransactionEnvelope.from_xdr_bytes(raw)
    except (binascii.Error, ValueError, EOFError, IndexError, TypeError) as e:
        raise MalformedEnvelope(str(e)) from e
    except Exception as e:  # xdrlib raises assorted errors on garbage input
        raise MalformedEnvelope(str(e)) from e
    fee_bump = None
    fee_bump_sigs: list[x.DecoratedSignature] = []
    if env.type == ET.ENVELOPE_TYPE_TX_V0:
        v0 = env.v0.tx
        cond = (
            x.Preconditions(x.PreconditionType.PRECOND_TIME, time_bounds=v0.time_bounds)
            if v0.time_bounds is not None
            else x.Preconditions(x.PreconditionType.PRECOND_NONE)
        )
        tx = x.Transaction(
            source_account=x.MuxedAccount(x.CryptoKeyType.KEY_TYPE_ED25519, ed25519=v0.source_account_ed25519),
            fee=v0.fee,
            seq_num=v0.seq_num,
            cond=cond,
            memo=v0.memo,
            operations=v0.operations,
            ext=x.TransactionExt(0),
        )
        sigs = env.v0.signatures
    elif env.type == ET.ENVELOPE_TYPE_TX:
        tx, sigs = env.v1.tx, env.v1.signatures
    elif env.type == ET.ENVELOPE_TYPE_TX_FEE_BUMP:
        fee_bump = env.fee_bump.tx
        fee_bump_sigs = env.fee_bump.signatures
        tx, sigs = fee_bump.inner_tx.v1.tx, fee_bump.inner_tx.v1.signatures
    else:
        raise MalformedEnvelope(f"unsupported envelope type {env.type}")
    tx_hash = _payload_hash(network_id, x.TransactionSignaturePayloadTaggedTransaction(ET.ENVELOPE_TYPE_TX, tx=tx))
    outer = tx_hash
    if fee_bump is not None:
        outer = _payload_hash(
            network_id,
            x.TransactionSignaturePayloadTaggedTransaction(ET.ENVELOPE_TYPE_TX_FEE_BUMP, fee_bump=fee_bump),
        )
    return ParsedTx(env, b64(raw), outer, tx, tx_hash, list(sigs), fee_bump, list(fee_bump_sigs))


class SignatureChecker:
    """stellar-core's SignatureChecker: weights of matching signatures against a threshold."""

    def __init__(self, contents_hash: bytes, signatures: list[x.DecoratedSignature]) -> None:
        self.hash = contents_hash
        self.sigs = signatures
        self.used = [False] * len(signatures)
        self._verified: dict[tuple[bytes, int], bool] = {}

    def _ed25519_ok(self, raw: bytes, i: int) -> bool:
        cache_key = (raw, i)
        if cache_key not in self._verified:
            sig = self.sigs[i]
            ok = False
            if sig.hint.signature_hint == raw[-4:]:
                try:
                    Keypair.from_raw_ed25519_public_key(raw).verify(self.hash, sig.signature.signature)
                    ok = True
                except (BadSignatureError, ValueError):
                    ok = False
            self._verified[cache_key] = ok
        return self._verified[cache_key]

    def check(self, signers: list[tuple[str, int]], needed: int) -> bool:
        total = 0
        for key, weight in signers:  # pre-authorized transaction hashes
            if key.startswith("T") and StrKey.decode_pre_auth_tx(key) == self.hash:
                total += weight
                if total >= needed:
                    return True
        for key, weight in signers:  # sha256 hash(x) preimages
            if not key.startswith("X"):
                continue
            h = StrKey.decode_sha256_hash(key)
            for i, sig in enumerate(self.sigs):
                if sig.hint.signature_hint == h[-4:] and sha256(sig.signature.signature) == h:
                    self.used[i] = True
                    total += weight
                    if total >= needed:
                        return True
                    break
        for key, weight in signers:  # ed25519 keys
            if not key.startswith("G"):
                continue
            raw = StrKey.decode_ed25519_public_key(key)
            for i in range(len(self.sigs)):
                if self._ed25519_ok(raw, i):
                    self.used[i] = True
                    total += weight
                    if total >= needed:
                        return True
                    break
        return False

    def check_account(self, acc: Account, needed: int) -> bool:
        signers = [(acc.account_id, acc.master_weight)] if acc.master_weight > 0 else []
        signers += [(s.key, s.weight) for s in acc.signers]
        return self.check(signers, needed)

    def all_used(self) -> bool:
        return all(self.used)


@dataclass
class TxRecord:
    parsed: ParsedTx
    ledger: int
    order: int  # 1-based application order in its ledger
    result: x.TransactionResult
    result_xdr: str
    meta_xdr: str
    fee_meta_xdr: str
    fee_charged: int
    successful: bool
    participants: set[str]
    op_participants: list[set[str]]
    closed_at: int | None = None

    @property
    def hash_hex(self) -> str:
        return self.parsed.hash_hex

    @property
    def paging_token(self) -> int:
        return toid(self.ledger, self.order)


@dataclass
class LedgerRecord:
    seq: int
    hash: bytes
    prev_hash: bytes
    close_time: int
    base_fee: int
    base_reserve: int
    total_coins: int
    fee_pool: int
    protocol_version: int
    max_tx_set_size: int
    header_xdr: str
    txs: list[TxRecord]

    @property
    def successful_count(self) -> int:
        return sum(1 for t in self.txs if t.successful)

    @property
    def failed_count(self) -> int:
        return sum(1 for t in self.txs if not t.successful)

    @property
    def operation_count(self) -> int:
        return sum(len(t.parsed.tx.operations) for t in self.txs if t.successful)

    @property
    def tx_set_operation_count(self) -> int:
        return sum(len(t.parsed.tx.operations) + (1 if t.parsed.fee_bump else 0) for t in self.txs)


@dataclass
class SubmitOutcome:
    """What happened to a submission: applied now, already known, rejected, refused for now
    (another transaction of one of its source accounts is in the open ledger), or undecodable."""

    status: str  # "applied" | "duplicate" | "rejected" | "try_again_later" | "malformed"
    envelope_xdr: str
    hash: str | None = None
    record: TxRecord | None = None
    result: x.TransactionResult | None = None
    error: str | None = None


def _preconditions(tx: x.Transaction):
    c = tx.cond
    if c.type == x.PreconditionType.PRECOND_NONE:
        return None, None, None, 0, 0, []
    if c.type == x.PreconditionType.PRECOND_TIME:
        return c.time_bounds, None, None, 0, 0, []
    v2 = c.v2
    min_seq = v2.min_seq_num.sequence_number.int64 if v2.min_seq_num is not None else None
    return (
        v2.time_bounds,
        v2.ledger_bounds,
        min_seq,
        v2.min_seq_age.duration.uint64,
        v2.min_seq_ledger_gap.uint32,
        list(v2.extra_signers),
    )


def _valid_string(raw: bytes) -> bool:
    return all(0x20 <= c != 0x7F for c in raw)


def _auth_level(flags: int) -> int:
    if flags & TL_AUTHORIZED:
        return 2
    if flags & TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES:
        return 1
    return 0


class StellarLedger:
    """Accounts, trustlines and data entries, the open ledger, and the closed history."""

    def __init__(
        self,
        network_passphrase: str = DEFAULT_NETWORK_PASSPHRASE,
        *,
        base_fee: int = DEFAULT_BASE_FEE,
        base_reserve: int = DEFAULT_BASE_RESERVE,
        protocol_version: int = PROTOCOL_VERSION,
        max_tx_set_size: int = 1000,
        clock: Callable[[], float] = time.time,
        store: LedgerStore | None = None,
    ) -> None:
        """With ``store``, a saved network is continued (its settings and counters win over the
        arguments; a different passphrase is refused), and every close is saved."""
        self.network_passphrase = network_passphrase
        self.network_id = sha256(network_passphrase.encode())
        # stellar-core's root account: its seed is the network id.
        self.root_keypair = Keypair.from_raw_ed25519_seed(self.network_id)
        self.base_fee = base_fee
        self.base_reserve = base_reserve
        self.protocol_version = protocol_version
        self.max_tx_set_size = max_tx_set_size
        self._clock = clock
        self._offset = 0.0
        self._lock = threading.RLock()

        self._working = Store()
        self._closed = Store()
        self._dirty: set = set()
        self._fee_pool = 0
        self._by_hash: dict[str, TxRecord] = {}
        self._history: list[TxRecord] = []
        self._open_txs: list[TxRecord] = []
        # G accounts that are the tx source or fee source of a transaction in the open ledger
        self._open_sources: set[str] = set()
        self._rejections: dict[str, int] = {}
        self._ledgers: list[LedgerRecord] = []

        self._store = store
        saved = store.load() if store is not None else None
        if saved is not None:
            self._restore(saved)
            return
        genesis_time = int(self._clock())
        root = Account(self.root_keypair.public_key, TOTAL_COINS, 0, last_modified=1)
        for entries in (self._working, self._closed):
            entries.set(account_key(root.account_id), root)
        self._last_close_time = genesis_time
        genesis = self._append_ledger(1, genesis_time, [])
        self._open_seq = 2
        if store is not None:
            store.start_over()
            self._save(entries=[(account_key(root.account_id), root)], ledger=genesis)

    # ------------------------------------------------------------ persistence

    def _network(self) -> Network:
        return Network(self.network_passphrase, self.base_fee, self.base_reserve, self._fee_pool, self._offset)

    def _save(self, **changes: object) -> None:
        if self._store is not None:
            self._store.commit(network=self._network(), **changes)  # type: ignore[arg-type]

    def _restore(self, saved: SavedLedger) -> None:
        """Continue the saved network: entries, closed ledgers, transaction history, counters."""
        network = saved.network
        if network.network_passphrase != self.network_passphrase:
            raise RuntimeError(
                f"{self._store.path if self._store else 'the state'} holds the network "
                f"{network.network_passphrase!r}, not {self.network_passphrase!r}"
            )
        self.base_fee, self.base_reserve = network.base_fee, network.base_reserve
        self._fee_pool, self._offset = network.fee_pool, network.clock_offset
        for entry in saved.entries:
            for entries in (self._working, self._closed):
                entries.set(key_of(entry), entry)
        by_ledger: dict[int, list[TxRecord]] = {}
        for data in saved.transactions:
            parsed = parse_envelope(data["envelope_xdr"], self.network_id)
            record = TxRecord(
                parsed=parsed,
                ledger=data["ledger"],
                order=data["order"],
                result=x.TransactionResult.from_xdr(data["result_xdr"]),
                result_xdr=data["result_xdr"],
                meta_xdr=data["meta_xdr"],
                fee_meta_xdr=data["fee_meta_xdr"],
                fee_charged=data["fee_charged"],
                successful=data["successful"],
                participants=set(data["participants"]),
                op_participants=[set(p) for p in data["op_participants"]],
                closed_at=data["closed_at"],
            )
            by_ledger.setdefault(record.ledger, []).append(record)
            self._history.append(record)
            self._by_hash[parsed.hash_hex] = record
            if parsed.fee_bump is not None:
                self._by_hash.setdefault(parsed.tx_hash.hex(), record)
        for row in saved.ledgers:
            if row["seq"] != len(self._ledgers) + 1:
                raise RuntimeError(f"ledger {len(self._ledgers) + 1} is missing from the saved state")
            self._ledgers.append(
                LedgerRecord(**{**row, "hash": bytes(row["hash"]), "prev_hash": bytes(row["prev_hash"]), "txs": by_ledger.get(row["seq"], [])})
            )
        self._last_close_time = self._ledgers[-1].close_time
        self._open_seq = self._ledgers[-1].seq + 1

    def close(self) -> None:
        """Clean stop: close the open ledger if it holds transactions (so they are kept), then the store."""
        with self._lock:
            if self._store is None:
                return
            if self._open_txs:
                self.close_ledger()
            self._store.close()
            self._store = None

    # ------------------------------------------------------------ clock & config

    def now(self) -> int:
        """The devnet's clock (unix seconds): wall clock + offset, never before the last close."""
        with self._lock:
            return max(self._last_close_time, int(self._clock() + self._offset))

    def set_time(self, unix: int) -> None:
        with self._lock:
            if unix < self._last_close_time:
                raise ValueError(f"time cannot go back before the last ledger close ({self._last_close_time})")
            self._offset = unix - self._clock()
            self._save()

    def advance_time(self, seconds: float) -> None:
        with self._lock:
            if seconds < 0:
                raise ValueError("seconds must be >= 0")
            self._offset += seconds
            self._save()

    def set_base_fee(self, stroops: int) -> None:
        with self._lock:
            if stroops < 1:
                raise ValueError("base fee must be >= 1 stroop")
            self.base_fee = stroops
            self._save()

    # ------------------------------------------------------------ reads (closed state)

    @property
    def last_closed_seq(self) -> int:
        return self._ledgers[-1].seq

    @property
    def open_seq(self) -> int:
        return self._open_seq

    def latest_ledger(self) -> LedgerRecord:
        with self._lock:
            return self._ledgers[-1]

    def ledger(self, seq: int) -> LedgerRecord | None:
        with self._lock:
            if 1 <= seq <= len(self._ledgers):
                return self._ledgers[seq - 1]
            return None

    def ledgers(self) -> list[LedgerRecord]:
        with self._lock:
            return list(self._ledgers)

    def account(self, account_id: str) -> Account | None:
        with self._lock:
            return self._closed.get(account_key(account_id))  # type: ignore[return-value]

    def account_exists_open(self, account_id: str) -> bool:
        """Whether the account exists in the open ledger (including not yet closed changes)."""
        with self._lock:
            return self._working.get(account_key(account_id)) is not None

    def account_entries(self, account_id: str) -> tuple[list[TrustLine], list[DataEntry]]:
        with self._lock:
            owned = self._closed.owned_by(account_id)
        return (
            [e for e in owned if isinstance(e, TrustLine)],
            [e for e in owned if isinstance(e, DataEntry)],
        )

    def transaction(self, hash_hex: str) -> TxRecord | None:
        """A transaction in a closed ledger, by its hash or (fee bumps) its inner hash."""
        with self._lock:
            rec = self._by_hash.get(hash_hex.lower())
            return rec if rec is not None and rec.closed_at is not None else None

    def history(self) -> list[TxRecord]:
        with self._lock:
            return list(self._history)

    def pending(self) -> list[TxRecord]:
        with self._lock:
            return list(self._open_txs)

    def rejection_counts(self) -> dict[str, int]:
        """Refused submissions so far, by code: ``"TRY_AGAIN_LATER"`` (per-account queue limit)
        and the Horizon name of each rejecting transaction result code (``"tx_bad_seq"``, ...)."""
        with self._lock:
            return dict(self._rejections)

    def _count_rejection(self, code: str) -> None:
        self._rejections[code] = self._rejections.get(code, 0) + 1

    # ------------------------------------------------------------ ledger close

    def close_ledger(self) -> LedgerRecord:
        with self._lock:
            close_time = self.now()
            changed = [(key, self._working.get(key)) for key in self._dirty]
            for key, entry in changed:
                self._closed.set(key, entry)
            self._dirty.clear()
            txs, self._open_txs = self._open_txs, []
            self._open_sources = set()
            for rec in txs:
                rec.closed_at = close_time
            record = self._append_ledger(self._open_seq, close_time, txs)
            self._history.extend(txs)
            self._last_close_time = close_time
            self._open_seq += 1
            # Saved before the lock is released, i.e. before anyone can read the closed ledger.
            self._save(entries=changed, ledger=record)
            return record

    def _append_ledger(self, seq: int, close_time: int, txs: list[TxRecord]) -> LedgerRecord:
        prev_hash = self._ledgers[-1].hash if self._ledgers else b"\0" * 32
        tx_set_hash = sha256(prev_hash + b"".join(t.parsed.hash for t in txs))
        results_hash = sha256(b"".join(t.parsed.hash + t.result.to_xdr_bytes() for t in txs))
        header = x.LedgerHeader(
            ledger_version=x.Uint32(self.protocol_version),
            previous_ledger_hash=x.Hash(prev_hash),
            scp_value=x.StellarValue(
                tx_set_hash=x.Hash(tx_set_hash),
                close_time=x.TimePoint(x.Uint64(close_time)),
                upgrades=[],
                ext=x.StellarValueExt(x.StellarValueType.STELLAR_VALUE_BASIC),
            ),
            tx_set_result_hash=x.Hash(results_hash),
            bucket_list_hash=x.Hash(sha256(b"bucket" + seq.to_bytes(4, "big"))),
            ledger_seq=x.Uint32(seq),
            total_coins=x.Int64(TOTAL_COINS),
            fee_pool=x.Int64(self._fee_pool),
            inflation_seq=x.Uint32(0),
            id_pool=x.Uint64(0),
            base_fee=x.Uint32(self.base_fee),
            base_reserve=x.Uint32(self.base_reserve),
            max_tx_set_size=x.Uint32(self.max_tx_set_size),
            skip_list=[x.Hash(b"\0" * 32) for _ in range(4)],
            ext=x.LedgerHeaderExt(0),
        )
        raw = header.to_xdr_bytes()
        record = LedgerRecord(
            seq=seq,
            hash=sha256(raw),
            prev_hash=prev_hash,
            close_time=close_time,
            base_fee=self.base_fee,
            base_reserve=self.base_reserve,
            total_coins=TOTAL_COINS,
            fee_pool=self._fee_pool,
            protocol_version=self.protocol_version,
            max_tx_set_size=self.max_tx_set_size,
            header_xdr=b64(raw),
            txs=txs,
        )
        self._ledgers.append(record)
        return record

    # ------------------------------------------------------------ submission

    def submit(self, envelope_b64: str, *, queue_limit: bool = True) -> SubmitOutcome:
        """Validate and (if valid) apply a transaction envelope into the open ledger.

        With ``queue_limit`` (stellar-core's one-transaction-per-account queue rule), a
        transaction whose tx source or fee source already is a source of a transaction in the
        open ledger is answered ``try_again_later`` without validating or changing anything.
        """
        try:
            parsed = parse_envelope(envelope_b64, self.network_id)
        except MalformedEnvelope as e:
            return SubmitOutcome("malformed", envelope_b64, error=str(e))
        with self._lock:
            known = self._by_hash.get(parsed.hash_hex)
            if known is not None:
                return SubmitOutcome("duplicate", parsed.envelope_xdr, parsed.hash_hex, record=known)
            if queue_limit and self._open_sources.intersection(self._sources(parsed)):
                self._count_rejection("TRY_AGAIN_LATER")
                return SubmitOutcome("try_again_later", parsed.envelope_xdr, parsed.hash_hex)
            ledger_seq, now = self._open_seq, self.now()
            view = Txn(self._working, ledger_seq)
            rejection = self._check(view, parsed, ledger_seq, now)
            if rejection is not None:
                self._count_rejection(TX_CODE_NAMES[rejection.result.code])
                return SubmitOutcome("rejected", parsed.envelope_xdr, parsed.hash_hex, result=rejection)
            record = self._apply(parsed, ledger_seq, now)
            return SubmitOutcome("applied", parsed.envelope_xdr, parsed.hash_hex, record=record)

    @staticmethod
    def _sources(parsed: ParsedTx) -> set[str]:
        """The accounts stellar-core's queue limit is about: the tx source and the fee source."""
        return {parsed.tx_source.account_id, parsed.fee_source.account_id}

    def friendbot_envelope(self, destination: str, starting_balance: int) -> str:
        """A create_account from the root account, signed, ready for :meth:`submit`."""
        with self._lock:
            root = self._working.get(account_key(self.root_keypair.public_key))
            assert isinstance(root, Account)
            op = x.Operation(
                None,
                x.OperationBody(
                    OpT.CREATE_ACCOUNT,
                    create_account_op=x.CreateAccountOp(
                        x.AccountID(
                            x.PublicKey(
                                x.PublicKeyType.PUBLIC_KEY_TYPE_ED25519,
                                x.Uint256(StrKey.decode_ed25519_public_key(destination)),
                            )
                        ),
                        x.Int64(starting_balance),
                    ),
                ),
            )
            tx = x.Transaction(
                source_account=x.MuxedAccount(
                    x.CryptoKeyType.KEY_TYPE_ED25519,
                    ed25519=x.Uint256(self.root_keypair.raw_public_key()),
                ),
                fee=x.Uint32(self.base_fee),
                seq_num=x.SequenceNumber(x.Int64(root.seq_num + 1)),
                cond=x.Preconditions(x.PreconditionType.PRECOND_NONE),
                memo=x.Memo(x.MemoType.MEMO_NONE),
                operations=[op],
                ext=x.TransactionExt(0),
            )
            h = _payload_hash(
                self.network_id,
                x.TransactionSignaturePayloadTaggedTransaction(ET.ENVELOPE_TYPE_TX, tx=tx),
            )
            sig = x.DecoratedSignature(
                x.SignatureHint(self.root_keypair.signature_hint()),
                x.Signature(self.root_keypair.sign(h)),
            )
            env = x.TransactionEnvelope(ET.ENVELOPE_TYPE_TX, v1=x.TransactionV1Envelope(tx, [sig]))
            return env.to_xdr()

    # ------------------------------------------------------------ validation

    def min_balance(self, acc: Account, extra_subentries: int = 0) -> int:
        return (2 + acc.num_sub_entries + extra_subentries) * self.base_reserve

    def available(self, acc: Account) -> int:
        return acc.balance - self.min_balance(acc)

    def _check(self, view: Txn, parsed: ParsedTx, ledger_seq: int, now: int) -> x.TransactionResult | None:
        if parsed.fee_bump is None:
            checker = SignatureChecker(parsed.tx_hash, parsed.signatures)
            bad = self._check_tx(view, parsed.tx, checker, True, ledger_seq, now)
            if bad is None:
                return None
            return tx_result(bad[0], 0, bad[1])
        fb = parsed.fee_bump
        n = len(parsed.tx.operations)
        outer_fee = fb.fee.int64
        inner_fee = parsed.tx.fee.uint32
        if outer_fee < self.base_fee * (n + 1) or outer_fee * max(n, 1) < inner_fee * (n + 1):
            return tx_result(TxCode.txINSUFFICIENT_FEE)
        fee_acc = view.account(parsed.fee_source.account_id)
        if fee_acc is None:
            return tx_result(TxCode.txNO_ACCOUNT)
        outer_checker = SignatureChecker(parsed.hash, parsed.fee_bump_signatures)
        if not outer_checker.check_account(fee_acc, fee_acc.low_threshold):
            return tx_result(TxCode.txBAD_AUTH)
        if self.available(fee_acc) < outer_fee:
            return tx_result(TxCode.txINSUFFICIENT_BALANCE)
        checker = SignatureChecker(parsed.tx_hash, parsed.signatures)
        bad = self._check_tx(view, parsed.tx, checker, False, ledger_seq, now)
        if bad is not None:
            inner = inner_tx_result(bad[0], bad[1])
            return tx_result(TxCode.txFEE_BUMP_INNER_FAILED, 0, inner=(parsed.tx_hash, inner))
        if not outer_checker.all_used():
            return tx_result(TxCode.txBAD_AUTH_EXTRA)
        return None

    def _check_tx(
        self,
        view: Txn,
        tx: x.Transaction,
        checker: SignatureChecker,
        charge_fee: bool,
        ledger_seq: int,
        now: int,
    ) -> tuple[TxCode, list | None] | None:
        ops = tx.operations
        if not ops:
            return TxCode.txMISSING_OPERATION, None
        if len(ops) > MAX_OPS_PER_TX or tx.ext.v != 0:
            return TxCode.txMALFORMED, None
        tb, lb, min_seq, min_age, min_gap, extra_signers = _preconditions(tx)
        if tb is not None:
            min_t, max_t = tb.min_time.time_point.uint64, tb.max_time.time_point.uint64
            if min_t and min_t > now:
                return TxCode.txTOO_EARLY, None
            if max_t and max_t < now:
                return TxCode.txTOO_LATE, None
        if lb is not None:
            if lb.min_ledger.uint32 > ledger_seq:
                return TxCode.txTOO_EARLY, None
            if lb.max_ledger.uint32 and lb.max_ledger.uint32 <= ledger_seq:
                return TxCode.txTOO_LATE, None
        if charge_fee and tx.fee.uint32 < self.base_fee * len(ops):
            return TxCode.txINSUFFICIENT_FEE, None
        source = muxed_from_xdr(tx.source_account).account_id
        acc = view.account(source)
        if acc is None:
            return TxCode.txNO_ACCOUNT, None
        seq = tx.seq_num.sequence_number.int64
        if min_seq is None:
            seq_ok = seq == acc.seq_num + 1
        else:
            seq_ok = min_seq <= acc.seq_num < seq
        if not seq_ok:
            return TxCode.txBAD_SEQ, None
        if min_age and now - acc.seq_time < min_age:
            return TxCode.txBAD_MIN_SEQ_AGE_OR_GAP, None
        if min_gap and ledger_seq - acc.seq_ledger < min_gap:
            return TxCode.txBAD_MIN_SEQ_AGE_OR_GAP, None
        if not checker.check_account(acc, acc.low_threshold):
            return TxCode.txBAD_AUTH, None
        for signer in extra_signers:
            if signer.type == x.SignerKeyType.SIGNER_KEY_TYPE_ED25519_SIGNED_PAYLOAD:
                return TxCode.txBAD_AUTH, None  # not supported by this devnet
            key, _kind = signer_key_to_str(signer)
            if not checker.check([(key, 1)], 1):
                return TxCode.txBAD_AUTH, None
        if charge_fee and self.available(acc) < tx.fee.uint32:
            return TxCode.txINSUFFICIENT_BALANCE, None
        op_results = [self._check_op(view, source, op, checker) for op in ops]
        if not all(op_succeeded(r) for r in op_results):
            return TxCode.txFAILED, op_results
        if not checker.all_used():
            return TxCode.txBAD_AUTH_EXTRA, None
        return None

    @staticmethod
    def _threshold_level(op: x.Operation) -> str:
        t = op.body.type
        if t in (OpT.ALLOW_TRUST, OpT.SET_TRUST_LINE_FLAGS, OpT.BUMP_SEQUENCE):
            return "low"
        if t == OpT.ACCOUNT_MERGE:
            return "high"
        if t == OpT.SET_OPTIONS:
            so = op.body.set_options_op
            if any(
                v is not None
                for v in (
                    so.master_weight,
                    so.low_threshold,
                    so.med_threshold,
                    so.high_threshold,
                    so.signer,
                )
            ):
                return "high"
        return "med"

    def _check_op(self, view: Txn, tx_source: str, op: x.Operation, checker: SignatureChecker) -> x.OperationResult:
        t = op.body.type
        if t not in SUPPORTED_OPS:
            return op_generic(x.OperationResultCode.opNOT_SUPPORTED)
        src = muxed_from_xdr(op.source_account).account_id if op.source_account else tx_source
        acc = view.account(src)
        if acc is None:
            # stellar-core accepts a missing op source if its own key signed (it may be created
            # by an earlier op); at apply time a still-missing source is op_no_source_account.
            if op.source_account is None or not checker.check([(src, 1)], 0):
                return op_generic(x.OperationResultCode.opNO_ACCOUNT if op.source_account is None else x.OperationResultCode.opBAD_AUTH)
        else:
            level = self._threshold_level(op)
            needed = {
                "low": acc.low_threshold,
                "med": acc.med_threshold,
                "high": acc.high_threshold,
            }[level]
            if not checker.check_account(acc, needed):
                return op_generic(x.OperationResultCode.opBAD_AUTH)
        return self._op_well_formed(op, src)

    def _op_well_formed(self, op: x.Operation, src: str) -> x.OperationResult:
        b = op.body
        t = b.type
        if t == OpT.CREATE_ACCOUNT:
            C = x.CreateAccountResultCode
            o = b.create_account_op
            if o.starting_balance.int64 < 0 or account_id_to_str(o.destination) == src:
                return op_inner(t, C.CREATE_ACCOUNT_MALFORMED)
            return op_inner(t, C.CREATE_ACCOUNT_SUCCESS)
        if t == OpT.PAYMENT:
            P = x.PaymentResultCode
            o = b.payment_op
            try:
                asset_from_xdr(o.asset)
            except InvalidAsset:
                return op_inner(t, P.PAYMENT_MALFORMED)
            if o.amount.int64 <= 0:
                return op_inner(t, P.PAYMENT_MALFORMED)
            return op_inner(t, P.PAYMENT_SUCCESS)
        if t == OpT.CHANGE_TRUST:
            CT = x.ChangeTrustResultCode
            o = b.change_trust_op
            if o.line.type == x.AssetType.ASSET_TYPE_POOL_SHARE:
                return op_generic(x.OperationResultCode.opNOT_SUPPORTED)
            try:
                asset = asset_from_xdr(o.line)
            except InvalidAsset:
                return op_inner(t, CT.CHANGE_TRUST_MALFORMED)
            if asset is None or o.limit.int64 < 0 or asset.issuer == src:
                return op_inner(t, CT.CHANGE_TRUST_MALFORMED)
            return op_inner(t, CT.CHANGE_TRUST_SUCCESS)
        if t == OpT.ACCOUNT_MERGE:
            AM = x.AccountMergeResultCode
            if muxed_from_xdr(b.destination).account_id == src:
                return op_inner(t, AM.ACCOUNT_MERGE_MALFORMED)
            return op_inner(t, AM.ACCOUNT_MERGE_SUCCESS, source_account_balance=x.Int64(0))
        if t == OpT.MANAGE_DATA:
            MD = x.ManageDataResultCode
            name = b.manage_data_op.data_name.string64
            if not name or not _valid_string(name):
                return op_inner(t, MD.MANAGE_DATA_INVALID_NAME)
            return op_inner(t, MD.MANAGE_DATA_SUCCESS)
        if t == OpT.BUMP_SEQUENCE:
            BS = x.BumpSequenceResultCode
            if b.bump_sequence_op.bump_to.sequence_number.int64 < 0:
                return op_inner(t, BS.BUMP_SEQUENCE_BAD_SEQ)
            return op_inner(t, BS.BUMP_SEQUENCE_SUCCESS)
        if t == OpT.SET_OPTIONS:
            return self._set_options_well_formed(b.set_options_op, src)
        if t == OpT.SET_TRUST_LINE_FLAGS:
            S = x.SetTrustLineFlagsResultCode
            o = b.set_trust_line_flags_op
            try:
                asset = asset_from_xdr(o.asset)
            except InvalidAsset:
                return op_inner(t, S.SET_TRUST_LINE_FLAGS_MALFORMED)
            set_f, clear_f = o.set_flags.uint32, o.clear_flags.uint32
            if (
                asset is None
                or asset.issuer != src
                or account_id_to_str(o.trustor) == src
                or set_f & clear_f
                or (set_f | clear_f) & ~TL_FLAGS_MASK
                or set_f & TL_CLAWBACK_ENABLED
                or (set_f & TL_AUTHORIZED and set_f & TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES)
            ):
                return op_inner(t, S.SET_TRUST_LINE_FLAGS_MALFORMED)
            return op_inner(t, S.SET_TRUST_LINE_FLAGS_SUCCESS)
        if t == OpT.ALLOW_TRUST:
            A = x.AllowTrustResultCode
            o = b.allow_trust_op
            if o.authorize.uint32 > TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES or o.authorize.uint32 == 3:
                return op_inner(t, A.ALLOW_TRUST_MALFORMED)
            if account_id_to_str(o.trustor) == src:
                return op_inner(t, A.ALLOW_TRUST_SELF_NOT_ALLOWED)
            try:
                self._allow_trust_asset(o, src)
            except InvalidAsset:
                return op_inner(t, A.ALLOW_TRUST_MALFORMED)
            return op_inner(t, A.ALLOW_TRUST_SUCCESS)
        return op_generic(x.OperationResultCode.opNOT_SUPPORTED)

    @staticmethod
    def _allow_trust_asset(o: x.AllowTrustOp, issuer: str) -> AssetKey:
        code = o.asset
        if code.type == x.AssetType.ASSET_TYPE_CREDIT_ALPHANUM4:
            raw = code.asset_code4.asset_code4
            a = x.Asset(code.type, alpha_num4=x.AlphaNum4(x.AssetCode4(raw), o.trustor))
        else:
            raw = code.asset_code12.asset_code12
            a = x.Asset(code.type, alpha_num12=x.AlphaNum12(x.AssetCode12(raw), o.trustor))
        asset = asset_from_xdr(a)
        assert asset is not None
        return AssetKey(asset.code, issuer)

    def _set_options_well_formed(self, o: x.SetOptionsOp, src: str) -> x.OperationResult:
        SO = x.SetOptionsResultCode
        t = OpT.SET_OPTIONS
        set_f = o.set_flags.uint32 if o.set_flags is not None else 0
        clear_f = o.clear_flags.uint32 if o.clear_flags is not None else 0
        if (set_f | clear_f) & ~ACCOUNT_FLAGS_MASK:
            return op_inner(t, SO.SET_OPTIONS_UNKNOWN_FLAG)
        if set_f & clear_f:
            return op_inner(t, SO.SET_OPTIONS_BAD_FLAGS)
        for v in (o.master_weight, o.low_threshold, o.med_threshold, o.high_threshold):
            if v is not None and v.uint32 > 255:
                return op_inner(t, SO.SET_OPTIONS_THRESHOLD_OUT_OF_RANGE)
        if o.signer is not None:
            if o.signer.key.type == x.SignerKeyType.SIGNER_KEY_TYPE_ED25519_SIGNED_PAYLOAD:
                return op_inner(t, SO.SET_OPTIONS_BAD_SIGNER)  # not supported by this devnet
            key, _ = signer_key_to_str(o.signer.key)
            if key == src or o.signer.weight.uint32 > 255:
                return op_inner(t, SO.SET_OPTIONS_BAD_SIGNER)
        if o.home_domain is not None and not _valid_string(o.home_domain.string32):
            return op_inner(t, SO.SET_OPTIONS_INVALID_HOME_DOMAIN)
        return op_inner(t, SO.SET_OPTIONS_SUCCESS)

    # ------------------------------------------------------------ application

    def _apply(self, parsed: ParsedTx, ledger_seq: int, now: int) -> TxRecord:
        tx = parsed.tx
        n = len(tx.operations)
        tx_source = parsed.tx_source.account_id
        fee_source = parsed.fee_source.account_id
        fee_due = self.base_fee * (n + 1 if parsed.fee_bump else n)
        log = ChangeLog()
        root = Txn(self._working, ledger_seq)

        # 1. fee (charged even if an operation fails)
        step = root.child()
        fee_acc = step.account(fee_source)
        assert fee_acc is not None
        charged = min(fee_acc.balance, fee_due)
        step.put(replace(fee_acc, balance=fee_acc.balance - charged))
        log.fee = step.changes()
        step.commit()
        self._fee_pool += charged

        # 2. sequence number, and one-time (pre-auth tx) signers of the source accounts
        step = root.child()
        src_acc = step.account(tx_source)
        assert src_acc is not None
        step.put(
            replace(
                src_acc,
                seq_num=tx.seq_num.sequence_number.int64,
                seq_ledger=ledger_seq,
                seq_time=now,
            )
        )
        preauth = StrKey.encode_pre_auth_tx(parsed.tx_hash)
        sources = {tx_source} | {muxed_from_xdr(op.source_account).account_id for op in tx.operations if op.source_account}
        for account_id in sorted(sources):
            a = step.account(account_id)
            if a is not None and any(s.key == preauth for s in a.signers):
                step.put(
                    replace(
                        a,
                        signers=tuple(s for s in a.signers if s.key != preauth),
                        num_sub_entries=a.num_sub_entries - 1,
                    )
                )
        log.before = step.changes()
        step.commit()

        # 3. operations, atomically
        ops_txn = root.child()
        results: list[x.OperationResult] = []
        op_changes: list[list] = []
        for op in tx.operations:
            op_txn = ops_txn.child()
            r = self._apply_op(op_txn, tx_source, op, ledger_seq, now)
            results.append(r)
            if op_succeeded(r):
                op_changes.append(op_txn.changes())
                op_txn.commit()
        success = all(op_succeeded(r) for r in results)
        if success:
            ops_txn.commit()
            log.ops = op_changes
        self._dirty.update(root.touched_keys())
        root.commit()

        if parsed.fee_bump is not None:
            inner = inner_tx_result(TxCode.txSUCCESS if success else TxCode.txFAILED, results)
            code = TxCode.txFEE_BUMP_INNER_SUCCESS if success else TxCode.txFEE_BUMP_INNER_FAILED
            result = tx_result(code, charged, inner=(parsed.tx_hash, inner))
        else:
            result = tx_result(TxCode.txSUCCESS if success else TxCode.txFAILED, charged, results)
        meta = x.TransactionMeta(
            2,
            v2=x.TransactionMetaV2(
                tx_changes_before=changes_xdr(log.before),
                operations=[x.OperationMeta(changes_xdr(c)) for c in log.ops],
                tx_changes_after=x.LedgerEntryChanges([]),
            ),
        )
        op_parts = [self._op_participants(tx_source, op) for op in tx.operations]
        participants = {tx_source, fee_source, *log.all_accounts()}
        for p in op_parts:
            participants |= p
        record = TxRecord(
            parsed=parsed,
            ledger=ledger_seq,
            order=len(self._open_txs) + 1,
            result=result,
            result_xdr=result.to_xdr(),
            meta_xdr=meta.to_xdr(),
            fee_meta_xdr=changes_xdr(log.fee).to_xdr(),
            fee_charged=charged,
            successful=success,
            participants=participants,
            op_participants=op_parts,
        )
        self._open_txs.append(record)
        self._open_sources |= {tx_source, fee_source}
        self._by_hash[parsed.hash_hex] = record
        if parsed.fee_bump is not None:
            self._by_hash.setdefault(parsed.tx_hash.hex(), record)
        return record

    @staticmethod
    def _op_participants(tx_source: str, op: x.Operation) -> set[str]:
        src = muxed_from_xdr(op.source_account).account_id if op.source_account else tx_source
        out = {src}
        b = op.body
        t = b.type
        if t == OpT.CREATE_ACCOUNT:
            out.add(account_id_to_str(b.create_account_op.destination))
        elif t == OpT.PAYMENT:
            out.add(muxed_from_xdr(b.payment_op.destination).account_id)
        elif t == OpT.ACCOUNT_MERGE:
            out.add(muxed_from_xdr(b.destination).account_id)
        elif t == OpT.SET_TRUST_LINE_FLAGS:
            out.add(account_id_to_str(b.set_trust_line_flags_op.trustor))
        elif t == OpT.ALLOW_TRUST:
            out.add(account_id_to_str(b.allow_trust_op.trustor))
        return out

    def _add_subentry(self, txn: Txn, acc: Account, op_type: OpT, low_reserve_code) -> Account | x.OperationResult:
        if acc.num_sub_entries + 1 > MAX_SUBENTRIES:
            return op_generic(x.OperationResultCode.opTOO_MANY_SUBENTRIES)
        if acc.balance < self.min_balance(acc, 1):
            return op_inner(op_type, low_reserve_code)
        return txn.put(replace(acc, num_sub_entries=acc.num_sub_entries + 1))  # type: ignore[return-value]

    def _apply_op(self, txn: Txn, tx_source: str, op: x.Operation, ledger_seq: int, now: int) -> x.OperationResult:
        src = muxed_from_xdr(op.source_account).account_id if op.source_account else tx_source
        if txn.account(src) is None:
            return op_generic(x.OperationResultCode.opNO_ACCOUNT)
        b = op.body
        t = b.type
        if t == OpT.CREATE_ACCOUNT:
            return self._create_account(txn, src, b.create_account_op, ledger_seq)
        if t == OpT.PAYMENT:
            return self._payment(txn, src, b.payment_op)
        if t == OpT.CHANGE_TRUST:
            return self._change_trust(txn, src, b.change_trust_op)
        if t == OpT.ACCOUNT_MERGE:
            return self._account_merge(txn, src, b.destination, ledger_seq)
        if t == OpT.MANAGE_DATA:
            return self._manage_data(txn, src, b.manage_data_op)
        if t == OpT.BUMP_SEQUENCE:
            acc = txn.account(src)
            bump_to = b.bump_sequence_op.bump_to.sequence_number.int64
            if bump_to > acc.seq_num:
                txn.put(replace(acc, seq_num=bump_to, seq_ledger=ledger_seq, seq_time=now))
            return op_inner(t, x.BumpSequenceResultCode.BUMP_SEQUENCE_SUCCESS)
        if t == OpT.SET_OPTIONS:
            return self._set_options(txn, src, b.set_options_op)
        if t == OpT.SET_TRUST_LINE_FLAGS:
            o = b.set_trust_line_flags_op
            asset = asset_from_xdr(o.asset)
            return self._set_trustline_flags(txn, src, account_id_to_str(o.trustor), asset, o.set_flags.uint32, o.clear_flags.uint32, t)
        if t == OpT.ALLOW_TRUST:
            o = b.allow_trust_op
            asset = self._allow_trust_asset(o, src)
            mask = TL_AUTHORIZED | TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES
            auth = o.authorize.uint32
            return self._set_trustline_flags(txn, src, account_id_to_str(o.trustor), asset, auth, mask & ~auth, t)
        return op_generic(x.OperationResultCode.opNOT_SUPPORTED)

    def _create_account(self, txn: Txn, src: str, o: x.CreateAccountOp, ledger_seq: int):
        C = x.CreateAccountResultCode
        t = OpT.CREATE_ACCOUNT
        dest = account_id_to_str(o.destination)
        amount = o.starting_balance.int64
        if txn.account(dest) is not None:
            return op_inner(t, C.CREATE_ACCOUNT_ALREADY_EXIST)
        if amount < 2 * self.base_reserve:
            return op_inner(t, C.CREATE_ACCOUNT_LOW_RESERVE)
        acc = txn.account(src)
        if self.available(acc) < amount:
            return op_inner(t, C.CREATE_ACCOUNT_UNDERFUNDED)
        txn.put(replace(acc, balance=acc.balance - amount))
        txn.put(Account(dest, amount, ledger_seq << 32))
        return op_inner(t, C.CREATE_ACCOUNT_SUCCESS)

    def _payment(self, txn: Txn, src: str, o: x.PaymentOp):
        P = x.PaymentResultCode
        t = OpT.PAYMENT
        dest = muxed_from_xdr(o.destination).account_id
        asset = asset_from_xdr(o.asset)
        amount = o.amount.int64
        if asset is None and dest == src:
            return op_inner(t, P.PAYMENT_SUCCESS)
        dest_acc = txn.account(dest)
        if dest_acc is None:
            return op_inner(t, P.PAYMENT_NO_DESTINATION)
        # credit the destination first (as stellar-core's path payment does) ...
        if asset is None:
            if dest_acc.balance > INT64_MAX - amount:
                return op_inner(t, P.PAYMENT_LINE_FULL)
            txn.put(replace(dest_acc, balance=dest_acc.balance + amount))
        elif dest != asset.issuer:
            tl = txn.trustline(dest, asset)
            if tl is None:
                return op_inner(t, P.PAYMENT_NO_TRUST)
            if not tl.flags & TL_AUTHORIZED:
                return op_inner(t, P.PAYMENT_NOT_AUTHORIZED)
            if tl.balance + amount > tl.limit:
                return op_inner(t, P.PAYMENT_LINE_FULL)
            txn.put(replace(tl, balance=tl.balance + amount))
        # ... then debit the source
        if asset is None:
            acc = txn.account(src)
            if self.available(acc) < amount:
                return op_inner(t, P.PAYMENT_UNDERFUNDED)
            txn.put(replace(acc, balance=acc.balance - amount))
        elif src != asset.issuer:
            stl = txn.trustline(src, asset)
            if stl is None:
                return op_inner(t, P.PAYMENT_SRC_NO_TRUST)
            if not stl.flags & TL_AUTHORIZED:
                return op_inner(t, P.PAYMENT_SRC_NOT_AUTHORIZED)
            if stl.balance < amount:
                return op_inner(t, P.PAYMENT_UNDERFUNDED)
            txn.put(replace(stl, balance=stl.balance - amount))
        return op_inner(t, P.PAYMENT_SUCCESS)

    def _change_trust(self, txn: Txn, src: str, o: x.ChangeTrustOp):
        CT = x.ChangeTrustResultCode
        t = OpT.CHANGE_TRUST
        asset = asset_from_xdr(o.line)
        assert asset is not None
        limit = o.limit.int64
        tl = txn.trustline(src, asset)
        acc = txn.account(src)
        if tl is not None:
            if limit == 0:
                if tl.balance > 0:
                    return op_inner(t, CT.CHANGE_TRUST_INVALID_LIMIT)
                txn.delete(trustline_key(src, asset))
                txn.put(replace(acc, num_sub_entries=acc.num_sub_entries - 1))
                return op_inner(t, CT.CHANGE_TRUST_SUCCESS)
            if limit < tl.balance:
                return op_inner(t, CT.CHANGE_TRUST_INVALID_LIMIT)
            txn.put(replace(tl, limit=limit))
            return op_inner(t, CT.CHANGE_TRUST_SUCCESS)
        if limit == 0:
            return op_inner(t, CT.CHANGE_TRUST_INVALID_LIMIT)
        issuer = txn.account(asset.issuer)
        if issuer is None:
            return op_inner(t, CT.CHANGE_TRUST_NO_ISSUER)
        updated = self._add_subentry(txn, acc, t, CT.CHANGE_TRUST_LOW_RESERVE)
        if isinstance(updated, x.OperationResult):
            return updated
        flags = 0 if issuer.flags & AUTH_REQUIRED else TL_AUTHORIZED
        if issuer.flags & AUTH_CLAWBACK_ENABLED:
            flags |= TL_CLAWBACK_ENABLED
        txn.put(TrustLine(src, asset, 0, limit, flags))
        return op_inner(t, CT.CHANGE_TRUST_SUCCESS)

    def _account_merge(self, txn: Txn, src: str, destination: x.MuxedAccount, ledger_seq: int):
        AM = x.AccountMergeResultCode
        t = OpT.ACCOUNT_MERGE
        dest = muxed_from_xdr(destination).account_id
        dest_acc = txn.account(dest)
        if dest_acc is None:
            return op_inner(t, AM.ACCOUNT_MERGE_NO_ACCOUNT)
        acc = txn.account(src)
        if acc.flags & AUTH_IMMUTABLE:
            return op_inner(t, AM.ACCOUNT_MERGE_IMMUTABLE_SET)
        if acc.num_sub_entries != len(acc.signers):
            return op_inner(t, AM.ACCOUNT_MERGE_HAS_SUB_ENTRIES)
        if acc.seq_num >= ledger_seq << 32:
            return op_inner(t, AM.ACCOUNT_MERGE_SEQNUM_TOO_FAR)
        if dest_acc.balance > INT64_MAX - acc.balance:
            return op_inner(t, AM.ACCOUNT_MERGE_DEST_FULL)
        txn.put(replace(dest_acc, balance=dest_acc.balance + acc.balance))
        txn.delete(account_key(src))
        return op_inner(t, AM.ACCOUNT_MERGE_SUCCESS, source_account_balance=x.Int64(acc.balance))

    def _manage_data(self, txn: Txn, src: str, o: x.ManageDataOp):
        MD = x.ManageDataResultCode
        t = OpT.MANAGE_DATA
        name = o.data_name.string64.decode("utf-8", errors="surrogateescape")
        existing = txn.data(src, name)
        acc = txn.account(src)
        if o.data_value is None:
            if existing is None:
                return op_inner(t, MD.MANAGE_DATA_NAME_NOT_FOUND)
            txn.delete(data_key(src, name))
            txn.put(replace(acc, num_sub_entries=acc.num_sub_entries - 1))
            return op_inner(t, MD.MANAGE_DATA_SUCCESS)
        value = o.data_value.data_value
        if existing is not None:
            txn.put(replace(existing, value=value))
            return op_inner(t, MD.MANAGE_DATA_SUCCESS)
        updated = self._add_subentry(txn, acc, t, MD.MANAGE_DATA_LOW_RESERVE)
        if isinstance(updated, x.OperationResult):
            return updated
        txn.put(DataEntry(src, name, value))
        return op_inner(t, MD.MANAGE_DATA_SUCCESS)

    def _set_options(self, txn: Txn, src: str, o: x.SetOptionsOp):
        SO = x.SetOptionsResultCode
        t = OpT.SET_OPTIONS
        acc = txn.account(src)
        if o.inflation_dest is not None:
            dest = account_id_to_str(o.inflation_dest)
            if txn.account(dest) is None:
                return op_inner(t, SO.SET_OPTIONS_INVALID_INFLATION)
            acc = replace(acc, inflation_dest=dest)
        if o.set_flags is not None or o.clear_flags is not None:
            if acc.flags & AUTH_IMMUTABLE:
                return op_inner(t, SO.SET_OPTIONS_CANT_CHANGE)
            flags = acc.flags
            if o.clear_flags is not None:
                flags &= ~o.clear_flags.uint32
            if o.set_flags is not None:
                flags |= o.set_flags.uint32
            if flags & AUTH_CLAWBACK_ENABLED and not flags & AUTH_REVOCABLE:
                return op_inner(t, SO.SET_OPTIONS_AUTH_REVOCABLE_REQUIRED)
            acc = replace(acc, flags=flags)
        if o.master_weight is not None:
            acc = replace(acc, master_weight=o.master_weight.uint32)
        if o.low_threshold is not None:
            acc = replace(acc, low_threshold=o.low_threshold.uint32)
        if o.med_threshold is not None:
            acc = replace(acc, med_threshold=o.med_threshold.uint32)
        if o.high_threshold is not None:
            acc = replace(acc, high_threshold=o.high_threshold.uint32)
        if o.home_domain is not None:
            acc = replace(acc, home_domain=o.home_domain.string32.decode("utf-8", errors="replace"))
        if o.signer is not None:
            key, _ = signer_key_to_str(o.signer.key)
            weight = o.signer.weight.uint32
            current = {s.key: s for s in acc.signers}
            if weight == 0:
                if key in current:
                    del current[key]
                    acc = replace(acc, num_sub_entries=acc.num_sub_entries - 1)
            elif key in current:
                current[key] = Signer(key, weight)
            else:
                if len(current) >= MAX_SIGNERS:
                    return op_inner(t, SO.SET_OPTIONS_TOO_MANY_SIGNERS)
                if acc.num_sub_entries + 1 > MAX_SUBENTRIES:
                    return op_generic(x.OperationResultCode.opTOO_MANY_SUBENTRIES)
                if acc.balance < self.min_balance(acc, 1):
                    return op_inner(t, SO.SET_OPTIONS_LOW_RESERVE)
                current[key] = Signer(key, weight)
                acc = replace(acc, num_sub_entries=acc.num_sub_entries + 1)
            ordered = sorted(current.values(), key=lambda s: str_to_signer_key(s.key).to_xdr_bytes())
            acc = replace(acc, signers=tuple(ordered))
        txn.put(acc)
        return op_inner(t, SO.SET_OPTIONS_SUCCESS)

    def _set_trustline_flags(
        self,
        txn: Txn,
        issuer: str,
        trustor: str,
        asset: AssetKey,
        set_flags: int,
        clear_flags: int,
        t: OpT,
    ):
        if t == OpT.SET_TRUST_LINE_FLAGS:
            R = x.SetTrustLineFlagsResultCode
            no_tl, cant_revoke, invalid, ok = (
                R.SET_TRUST_LINE_FLAGS_NO_TRUST_LINE,
                R.SET_TRUST_LINE_FLAGS_CANT_REVOKE,
                R.SET_TRUST_LINE_FLAGS_INVALID_STATE,
                R.SET_TRUST_LINE_FLAGS_SUCCESS,
            )
        else:
            A = x.AllowTrustResultCode
            no_tl, cant_revoke, invalid, ok = (
                A.ALLOW_TRUST_NO_TRUST_LINE,
                A.ALLOW_TRUST_CANT_REVOKE,
                A.ALLOW_TRUST_MALFORMED,
                A.ALLOW_TRUST_SUCCESS,
            )
        tl = txn.trustline(trustor, asset)
        if tl is None:
            return op_inner(t, no_tl)
        new_flags = (tl.flags & ~clear_flags) | set_flags
        if new_flags & TL_AUTHORIZED and new_flags & TL_AUTHORIZED_TO_MAINTAIN_LIABILITIES:
            return op_inner(t, invalid)
        issuer_acc = txn.account(issuer)
        if _auth_level(new_flags) < _auth_level(tl.flags) and not issuer_acc.flags & AUTH_REVOCABLE:
            return op_inner(t, cant_revoke)
        txn.put(replace(tl, flags=new_flags))
        return op_inner(t, ok)
