"""The Stellar devnet's state on disk: one SQLite file in the state directory (``--state-dir``).

What a restart needs to be the same network: the ledger entries (accounts with their sequence
numbers, trustlines, data entries), every closed ledger (so /ledgers answers and ledger numbers
only go forward), every applied transaction with its result and meta (GET /transactions/{hash},
account histories), and the network's counters and settings (fee pool, clock offset, base fee).
Everything a ledger close changed is committed in one SQLite transaction before that ledger
becomes visible, so a SIGKILL loses at most the open ledger, whose transactions no client has
seen applied (a synchronous submit answers only after the close); a crash mid-write leaves the
previous state (SQLite's journal makes each commit atomic, where a file rewritten per close
would cost the whole history every second). Without a state directory the devnet keeps
everything in memory, as the tests use it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .codec import AssetKey
from .state import Account, DataEntry, Entry, Key, Signer, TrustLine

if TYPE_CHECKING:
    from .ledger import LedgerRecord, TxRecord

SCHEMA_VERSION = 1
FILE_NAME = "stellar-ledger.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledgers (
    seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, prev_hash BLOB NOT NULL, close_time INTEGER NOT NULL,
    base_fee INTEGER NOT NULL, base_reserve INTEGER NOT NULL, total_coins INTEGER NOT NULL,
    fee_pool INTEGER NOT NULL, protocol_version INTEGER NOT NULL, max_tx_set_size INTEGER NOT NULL,
    header_xdr TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transactions (
    hash TEXT PRIMARY KEY, ledger INTEGER NOT NULL, ord INTEGER NOT NULL, record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_by_ledger ON transactions (ledger, ord);
"""

_LEDGER_COLUMNS = (
    "seq",
    "hash",
    "prev_hash",
    "close_time",
    "base_fee",
    "base_reserve",
    "total_coins",
    "fee_pool",
    "protocol_version",
    "max_tx_set_size",
    "header_xdr",
)
_INSERT_LEDGER = f"INSERT INTO ledgers ({', '.join(_LEDGER_COLUMNS)}) VALUES ({', '.join('?' * len(_LEDGER_COLUMNS))})"


@dataclass(frozen=True)
class Network:
    """The settings and counters that are not ledger entries."""

    network_passphrase: str
    base_fee: int
    base_reserve: int
    fee_pool: int
    clock_offset: float


@dataclass
class SavedLedger:
    """Everything :class:`LedgerStore` holds, as read back at start."""

    network: Network
    entries: list[Entry]
    ledgers: list[dict[str, Any]]  # LedgerRecord fields without txs, by seq
    transactions: list[dict[str, Any]]  # see tx_record(), in ledger and application order


class LedgerStore:
    """SQLite file of one devnet; every ``commit`` is atomic."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILE_NAME
        # check_same_thread=False: the ledger's own lock serialises callers (server loop, test threads).
        # WAL + synchronous=NORMAL survives a killed process; only a power cut may lose the last commits.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        version = self._meta("schema_version")
        if version is not None and version != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema {version}, this devnet writes {SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _meta(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    # ------------------------------------------------------------------ read

    def load(self) -> SavedLedger | None:
        """The saved network, or None for a new (or never completed) state directory."""
        network = self._meta("network")
        if network is None or self._db.execute("SELECT 1 FROM ledgers LIMIT 1").fetchone() is None:
            return None
        return SavedLedger(
            network=Network(**network),
            entries=[entry_from_json(json.loads(e)) for (e,) in self._db.execute("SELECT entry FROM entries")],
            ledgers=[
                dict(zip(_LEDGER_COLUMNS, row, strict=True))
                for row in self._db.execute(f"SELECT {', '.join(_LEDGER_COLUMNS)} FROM ledgers ORDER BY seq")
            ],
            transactions=[json.loads(record) for (record,) in self._db.execute("SELECT record FROM transactions ORDER BY ledger, ord")],
        )

    # ------------------------------------------------------------------ write

    def start_over(self) -> None:
        """A new network: forget anything a start that never completed may have left."""
        with self._transaction():
            for table in ("meta", "entries", "ledgers", "transactions"):
                self._db.execute(f"DELETE FROM {table}")
            self._put_meta("schema_version", SCHEMA_VERSION)

    def commit(
        self,
        *,
        network: Network,
        entries: Iterable[tuple[Key, Entry | None]] = (),
        ledger: LedgerRecord | None = None,
    ) -> None:
        """One atomic step: the network counters, changed entries (None: deleted), a closed ledger
        with its transactions."""
        with self._transaction():
            self._put_meta("network", asdict(network))
            for key, entry in entries:
                key_text = json.dumps(list(key))
                if entry is None:
                    self._db.execute("DELETE FROM entries WHERE key = ?", (key_text,))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO entries (key, entry) VALUES (?, ?)",
                        (key_text, json.dumps(entry_to_json(entry))),
                    )
            if ledger is not None:
                self._db.execute(_INSERT_LEDGER, tuple(getattr(ledger, column) for column in _LEDGER_COLUMNS))
                self._db.executemany(
                    "INSERT INTO transactions (hash, ledger, ord, record) VALUES (?, ?, ?, ?)",
                    [(t.hash_hex, t.ledger, t.order, json.dumps(tx_record(t))) for t in ledger.txs],
                )

    def _put_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    class _Txn:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> None:
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, *_: object) -> None:
            self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

    def _transaction(self) -> LedgerStore._Txn:
        return LedgerStore._Txn(self._db)


# ---------------------------------------------------------------------- entries and transactions


def entry_to_json(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, Account):
        return {"type": "account", **asdict(entry)}
    if isinstance(entry, TrustLine):
        return {"type": "trustline", **asdict(entry), "asset": [entry.asset.code, entry.asset.issuer]}
    return {"type": "data", **asdict(entry), "value": base64.b64encode(entry.value).decode()}


def entry_from_json(data: dict[str, Any]) -> Entry:
    fields = {k: v for k, v in data.items() if k != "type"}
    if data["type"] == "account":
        return Account(**{**fields, "signers": tuple(Signer(**s) for s in fields["signers"])})
    if data["type"] == "trustline":
        return TrustLine(**{**fields, "asset": AssetKey(*fields["asset"])})
    return DataEntry(**{**fields, "value": base64.b64decode(fields["value"])})


def tx_record(record: TxRecord) -> dict[str, Any]:
    """An applied transaction as JSON-ready data; its envelope and result stay XDR."""
    return {
        "envelope_xdr": record.parsed.envelope_xdr,
        "ledger": record.ledger,
        "order": record.order,
        "result_xdr": record.result_xdr,
        "meta_xdr": record.meta_xdr,
        "fee_meta_xdr": record.fee_meta_xdr,
        "fee_charged": record.fee_charged,
        "successful": record.successful,
        "participants": sorted(record.participants),
        "op_participants": [sorted(p) for p in record.op_participants],
        "closed_at": record.closed_at,
    }
