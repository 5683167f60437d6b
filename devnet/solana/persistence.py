"""The Solana devnet's state on disk: one SQLite file in the state directory (``--state-dir``).

What a restart needs to look like the same chain: the genesis facts (slot, unix time, faucet key),
the tip (slot, block height), the recent blockhashes with the height each was issued at, every
account a transaction (or ``devnet_setAccount``) wrote, and every landed transaction with its
status and meta (getSignatureStatuses, getTransaction and getSignaturesForAddress answer for old
transactions). Each change is one SQLite transaction, committed before the RPC call that made it
returns (a landed transaction) or before the new slot is served (a slot tick), so a SIGKILL loses
nothing anyone has seen, and a crash mid-write leaves the previous state (SQLite's journal makes
each commit atomic, where a file rewritten per change would cost the whole history every time).
Without a state directory the devnet keeps everything in memory, as the tests use it.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from solders.account import Account
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import InnerInstruction
from solders.transaction_status import TransactionReturnData, TransactionStatus, UiTransactionTokenBalance

from .errors import tx_error_json

if TYPE_CHECKING:
    from .ledger import LandedTx

SCHEMA_VERSION = 1
FILE_NAME = "solana-ledger.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    pubkey TEXT PRIMARY KEY, lamports INTEGER NOT NULL, data BLOB NOT NULL, owner TEXT NOT NULL,
    executable INTEGER NOT NULL, rent_epoch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blockhashes (height INTEGER PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    seq INTEGER PRIMARY KEY, signature TEXT NOT NULL UNIQUE, slot INTEGER NOT NULL, record TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class Genesis:
    slot: int
    unix: int
    hash: Hash
    faucet_secret: bytes


@dataclass(frozen=True)
class Tip:
    slot: int
    block_height: int


@dataclass
class SavedLedger:
    """Everything :class:`LedgerStore` holds, as read back at start."""

    genesis: Genesis
    tip: Tip
    blockhashes: dict[int, Hash]
    accounts: dict[Pubkey, Account]
    landed: list[dict[str, Any]]  # transaction records in landing order, see landed_record()


class LedgerStore:
    """SQLite file of one devnet; every ``commit`` is atomic."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / FILE_NAME
        # One writer (the server's event loop); WAL + synchronous=NORMAL survives a killed process
        # (committed pages are in the OS's hands), only a power cut may lose the last commits.
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
        """The saved ledger, or None for a new (or never completed) state directory."""
        genesis, tip = self._meta("genesis"), self._meta("tip")
        if genesis is None or tip is None:
            return None
        return SavedLedger(
            genesis=Genesis(
                genesis["slot"],
                genesis["unix"],
                Hash.from_string(genesis["hash"]),
                base64.b64decode(genesis["faucet_secret"]),
            ),
            tip=Tip(tip["slot"], tip["block_height"]),
            blockhashes={height: Hash.from_string(text) for height, text in self._db.execute("SELECT height, hash FROM blockhashes")},
            accounts={
                Pubkey.from_string(pubkey): Account(lamports, bytes(data), Pubkey.from_string(owner), bool(executable), int(rent_epoch))
                for pubkey, lamports, data, owner, executable, rent_epoch in self._db.execute(
                    "SELECT pubkey, lamports, data, owner, executable, rent_epoch FROM accounts"
                )
            },
            landed=[json.loads(record) for (record,) in self._db.execute("SELECT record FROM transactions ORDER BY seq")],
        )

    # ------------------------------------------------------------------ write

    def start_over(self, genesis: Genesis) -> None:
        """A new chain: forget anything a start that never completed may have left."""
        with self._transaction():
            for table in ("meta", "accounts", "blockhashes", "transactions"):
                self._db.execute(f"DELETE FROM {table}")
            self._put_meta("schema_version", SCHEMA_VERSION)
            self._put_meta(
                "genesis",
                {
                    "slot": genesis.slot,
                    "unix": genesis.unix,
                    "hash": str(genesis.hash),
                    "faucet_secret": base64.b64encode(genesis.faucet_secret).decode(),
                },
            )

    def commit(
        self,
        *,
        tip: Tip | None = None,
        new_blockhashes: Iterable[tuple[int, Hash]] = (),
        forget_blockhashes_below: int | None = None,
        accounts: Iterable[tuple[Pubkey, Account | None]] = (),
        landed: dict[str, Any] | None = None,
    ) -> None:
        """Write these changes as one atomic step (``None`` for an account: it no longer exists)."""
        with self._transaction():
            if tip is not None:
                self._put_meta("tip", {"slot": tip.slot, "block_height": tip.block_height})
            self._db.executemany(
                "INSERT OR REPLACE INTO blockhashes (height, hash) VALUES (?, ?)",
                [(height, str(blockhash)) for height, blockhash in new_blockhashes],
            )
            if forget_blockhashes_below is not None:
                self._db.execute("DELETE FROM blockhashes WHERE height < ?", (forget_blockhashes_below,))
            for pubkey, account in accounts:
                if account is None:
                    self._db.execute("DELETE FROM accounts WHERE pubkey = ?", (str(pubkey),))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO accounts (pubkey, lamports, data, owner, executable, rent_epoch) VALUES (?, ?, ?, ?, ?, ?)",
                        (str(pubkey), account.lamports, bytes(account.data), str(account.owner), int(account.executable), str(account.rent_epoch)),
                    )
            if landed is not None:
                self._db.execute(
                    "INSERT INTO transactions (signature, slot, record) VALUES (?, ?, ?)",
                    (landed["signature"], landed["slot"], json.dumps(landed, separators=(",", ":"))),
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


# ---------------------------------------------------------------------- transaction records


def landed_record(landed: LandedTx) -> dict[str, Any]:
    """A landed transaction as JSON-ready data; solders objects in their own JSON or wire forms."""
    return {
        "signature": str(landed.signature),
        "slot": landed.slot,
        "block_time": landed.block_time,
        "tx": base64.b64encode(bytes(landed.tx)).decode(),
        "account_keys": [str(k) for k in landed.account_keys],
        "loaded_writable": [str(k) for k in landed.loaded_writable],
        "loaded_readonly": [str(k) for k in landed.loaded_readonly],
        "err": tx_error_json(landed.err),
        "fee": landed.fee,
        "logs": landed.logs,
        "compute_units": landed.compute_units,
        "inner_instructions": [[item.to_json() for item in group] for group in landed.inner_instructions],
        "return_data": None if landed.return_data is None else landed.return_data.to_json(),
        "pre_balances": landed.pre_balances,
        "post_balances": landed.post_balances,
        "pre_token_balances": [b.to_json() for b in landed.pre_token_balances],
        "post_token_balances": [b.to_json() for b in landed.post_token_balances],
        "index_in_slot": landed.index_in_slot,
    }


def landed_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`landed_record`: keyword arguments for ``LandedTx``."""
    return {
        "signature": Signature.from_string(record["signature"]),
        "slot": record["slot"],
        "block_time": record["block_time"],
        "tx": VersionedTransaction.from_bytes(base64.b64decode(record["tx"])),
        "account_keys": _pubkeys(record["account_keys"]),
        "loaded_writable": _pubkeys(record["loaded_writable"]),
        "loaded_readonly": _pubkeys(record["loaded_readonly"]),
        "err": _tx_error(record["err"]),
        "fee": record["fee"],
        "logs": record["logs"],
        "compute_units": record["compute_units"],
        "inner_instructions": [[InnerInstruction.from_json(item) for item in group] for group in record["inner_instructions"]],
        "return_data": (None if record["return_data"] is None else TransactionReturnData.from_json(record["return_data"])),
        "pre_balances": record["pre_balances"],
        "post_balances": record["post_balances"],
        "pre_token_balances": [UiTransactionTokenBalance.from_json(b) for b in record["pre_token_balances"]],
        "post_token_balances": [UiTransactionTokenBalance.from_json(b) for b in record["post_token_balances"]],
        "index_in_slot": record["index_in_slot"],
    }


def _pubkeys(values: list[str]) -> list[Pubkey]:
    return [Pubkey.from_string(v) for v in values]


def _tx_error(err_json: Any) -> Any:
    """A solders TransactionError from its serde JSON form (solders parses it inside a status)."""
    if err_json is None:
        return None
    status = {"slot": 0, "confirmations": None, "status": {"Err": err_json}, "err": err_json, "confirmationStatus": None}
    return TransactionStatus.from_json(json.dumps(status)).err
