"""Reconciliation tables: what the chains recorded for our accounts, and each run's report.

- ``chain_transfers``: value that moved into or out of one of our accounts in a transaction that is
  none of custody's attempts, discovered on chain (deposits from outside, faucet funding, and
  spends from our keys that no withdrawal explains). Our own attempts are never stored here: the
  withdrawal rows are the database's view of those.
- ``reconciliation_cursors``: where discovery resumes, per chain and scope (EVM: the last scanned
  block and its hash; Solana: the newest signature read per address; Stellar: the paging token
  per account). Written in the same transaction as the transfers found before it.
- ``reconciliation_checks``: the last re-verification of each COMPLETED withdrawal's transaction
  (FINAL ones are not checked again), and costs the chain charged beyond amount and fee.
- ``reconciliation_reports`` / ``reconciliation_events``: each run's table, and what changed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from models.db import BaseUnits, _ts


class ChainTransfer(SQLModel, table=True):
    __tablename__ = "chain_transfers"
    __table_args__ = (
        sa.UniqueConstraint("chain", "tx_hash", "account", "asset", "direction", "event_key", name="uq_chain_transfers_event"),
        sa.Index("ix_chain_transfers_chain_account", "chain", "account"),
        sa.Index("ix_chain_transfers_chain_block", "chain", "block_number"),
    )

    id: int | None = Field(default=None, primary_key=True)
    chain: str
    tx_hash: str
    account: str  # our address whose balance moved
    asset: str
    direction: str  # IN: a deposit | OUT: a spend from our key that no withdrawal explains
    amount: int = Field(sa_type=BaseUnits)
    fee: int = Field(default=0, sa_type=BaseUnits)  # native fee charged to `account` (OUT)
    event_key: str  # which movement of the transaction (log index, operation, ...)
    counterparty: str | None = None
    sequence: int | None = Field(default=None, sa_type=sa.BigInteger)  # the slot it used (EVM nonce)
    block_number: int | None = Field(default=None, sa_type=sa.BigInteger)
    block_hash: str | None = None
    detail: str = ""
    observed_at: datetime = _ts()


class ReconciliationCursor(SQLModel, table=True):
    __tablename__ = "reconciliation_cursors"

    chain: str = Field(primary_key=True)
    scope: str = Field(primary_key=True)
    cursor: str
    updated_at: datetime = _ts()


class CheckState:
    FINAL = "FINAL"  # on the canonical chain, successful, beyond reorg reach: not checked again
    NOT_FINAL = "NOT_FINAL"  # there and successful, still within reorg reach
    MISSING = "MISSING"  # no longer on the chain: the COMPLETED withdrawal paid nothing
    FAILED = "FAILED"  # on the chain, but not successful


class ReconciliationCheck(SQLModel, table=True):
    __tablename__ = "reconciliation_checks"

    withdrawal_id: str = Field(primary_key=True, foreign_key="withdrawals.id")
    chain: str = Field(index=True)
    tx_hash: str
    state: str
    detail: str = ""
    # Native base units the transaction took beyond amount and fee (Solana: rent of accounts it
    # created); None where the chain has no such costs or the transaction could not be read.
    side_cost: int | None = Field(default=None, sa_type=BaseUnits)
    first_checked_at: datetime = _ts()
    checked_at: datetime = _ts()


class ReconciliationReport(SQLModel, table=True):
    """One run's findings. Amounts inside the JSON are base-unit strings (uint256-safe)."""

    __tablename__ = "reconciliation_reports"

    id: str = Field(primary_key=True)
    run_key: str = Field(unique=True)  # the workflow id: a retried report step rewrites its own row
    chain: str = Field(index=True)
    status: str  # OK | MISMATCH
    point: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    rows: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONB)
    vanished: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONB)
    unexplained: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONB)
    summary: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    created_at: datetime = _ts()


class ReconciliationEvent(SQLModel, table=True):
    """A finding that is new (or changed) since the chain's previous report: DRIFT, VANISHED or
    UNEXPLAINED. Unchanged findings are in every report but recorded here once."""

    __tablename__ = "reconciliation_events"

    id: int | None = Field(default=None, primary_key=True)
    report_id: str = Field(index=True)
    chain: str = Field(index=True)
    kind: str
    wallet_id: str | None = None
    asset: str | None = None
    amount: int | None = Field(default=None, sa_type=BaseUnits)  # drift, or what moved
    tx_hash: str | None = None
    withdrawal_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    at: datetime = _ts()
