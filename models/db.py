"""Database tables (SQLModel). Rows never cross into workflows; payloads.py does that.

Amounts are integers in the chain's smallest unit, stored as NUMERIC(78, 0) so that any
uint256 fits, and read back as ``int`` (never float, never Decimal).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# BaseUnits and utcnow are re-exported (models.db.utcnow and models.db.BaseUnits are used widely).
from models.columns import BaseUnits as BaseUnits
from models.columns import timestamp_field
from models.columns import utcnow as utcnow

# The shared timestamp column under the name the tables below have always used.
_ts = timestamp_field


class Wallet(SQLModel, table=True):
    __tablename__ = "wallets"
    __table_args__ = (
        sa.UniqueConstraint("owner", "chain", "idempotency_key", name="uq_wallets_idempotency"),
        # One live wallet per (owner, chain, label); inactive ones may share the label.
        sa.Index(
            "uq_wallets_live_label",
            "owner",
            "chain",
            "label",
            unique=True,
            postgresql_where=sa.text("status IN ('CREATING', 'ACTIVE')"),
        ),
    )

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    chain: str
    label: str
    status: str = "CREATING"  # CREATING -> ACTIVE <-> INACTIVE | FAILED
    address: str | None = Field(default=None, index=True)
    signer_backend: str
    key_ref: str | None = None
    public_key: str | None = None  # hex; the private key never leaves the signer backend
    idempotency_key: str | None = None
    error_code: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    # Frozen by an admin: nothing is signed from it (new withdrawals refused, in-flight ones stop
    # before signing with WALLET_FROZEN); independent of ACTIVE/INACTIVE, which owners control.
    frozen_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    frozen_by: str | None = None
    frozen_reason: str | None = None


class Withdrawal(SQLModel, table=True):
    __tablename__ = "withdrawals"
    __table_args__ = (sa.UniqueConstraint("owner", "idempotency_key", name="uq_withdrawals_idempotency"),)

    id: str = Field(primary_key=True)
    owner: str = Field(index=True)
    wallet_id: str = Field(foreign_key="wallets.id", index=True)
    chain: str
    asset: str
    destination: str
    recipient_owner: str | None = None  # set when the destination was a custody user's handle
    retry_of: str | None = Field(default=None, index=True)  # the FAILED withdrawal this one retries
    # Who asked, when not the owner: the leaser of a pool explorer, or the rebalance run (four eyes
    # compares approvers with this).
    requested_by: str | None = None
    # Empty the wallet: the amount is fixed when funds are reserved to (everything spendable - the
    # exact fee), leaving nothing behind (explorer recovery).
    sweep: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # TRANSFER, or TRUSTLINE: the wallet's own change_trust for `asset` (Stellar), amount 0, to
    # itself; the same workflow and exactly-once steps as a transfer.
    kind: str = Field(default="TRANSFER", sa_column_kwargs={"server_default": "TRANSFER"})
    amount: int = Field(sa_type=BaseUnits)
    memo_type: str | None = None  # text | id | hash (chains that carry memos)
    memo_value: str | None = None
    status: str = Field(default="PENDING", index=True)
    error_code: str | None = None
    error_message: str | None = None
    paused: bool = False
    paused_by: str | None = None
    paused_reason: str | None = None
    approved_by: str | None = None
    cancel_requested_by: str | None = None
    idempotency_key: str
    request_hash: str
    tx_hash: str | None = None
    nonce: int | None = Field(default=None, sa_type=sa.BigInteger)
    block_number: int | None = Field(default=None, sa_type=sa.BigInteger)
    fee_paid: int | None = Field(default=None, sa_type=BaseUnits)
    # HMAC of the requested intent (models/intent_seal.py), checked by the signing guard.
    intent_seal: str | None = None
    # The policy decision it was judged by before funds were held (history: policy_decisions).
    policy_version: int | None = None
    policy_rule_id: str | None = None
    policy_outcome: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    completed_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class WithdrawalEvent(SQLModel, table=True):
    """Status history: one row per transition, so the story outlives Temporal's retention."""

    __tablename__ = "withdrawal_events"

    id: int | None = Field(default=None, primary_key=True)
    withdrawal_id: str = Field(foreign_key="withdrawals.id", index=True)
    status: str
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    at: datetime = _ts()


class Reservation(SQLModel, table=True):
    """Funds held for one withdrawal; keyed by the withdrawal so reserving twice is a no-op."""

    __tablename__ = "reservations"

    withdrawal_id: str = Field(primary_key=True, foreign_key="withdrawals.id")
    wallet_id: str = Field(index=True)
    asset: str
    amount: int = Field(sa_type=BaseUnits)
    fee_amount: int = Field(sa_type=BaseUnits)  # in the chain's native asset
    state: str = "HELD"  # HELD -> SETTLED | RELEASED
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class SequenceClaim(SQLModel, table=True):
    """Who holds which slot (EVM nonce / Stellar sequence) of a sending address.

    The claim is written in the same transaction as the signed attempt that uses it, so the
    database never records a nonce without the bytes signed for it, nor the reverse.
    A RELEASED claim belongs to a withdrawal that failed before its transaction could land;
    the next withdrawal from that sender takes it over so no nonce gap jams the sender.
    """

    __tablename__ = "sequence_claims"

    chain: str = Field(primary_key=True)
    sender: str = Field(primary_key=True)
    sequence: int = Field(primary_key=True, sa_type=sa.BigInteger)
    withdrawal_id: str = Field(index=True)
    state: str = "ACTIVE"  # ACTIVE | RELEASED
    updated_at: datetime = _ts()


class TransferAttempt(SQLModel, table=True):
    """Every signed transaction ever made for a withdrawal, persisted before it is broadcast."""

    __tablename__ = "transfer_attempts"

    id: int | None = Field(default=None, primary_key=True)
    withdrawal_id: str = Field(foreign_key="withdrawals.id", index=True)
    chain: str
    sender: str
    sequence: int | None = Field(default=None, sa_type=sa.BigInteger)
    tx_hash: str = Field(unique=True)
    raw_tx: str  # hex of the exact signed bytes: re-broadcasting sends these, never re-signs
    purpose: str = "TRANSFER"  # TRANSFER | CANCEL (EVM: 0-value self-send in the same nonce)
    fee_params: dict[str, Any] = Field(default_factory=dict, sa_type=JSONB)
    max_fee: int = Field(sa_type=BaseUnits)  # the most this attempt can cost, native units
    state: str = "SIGNED"  # SIGNED -> BROADCAST; once the withdrawal is final: LANDED | REVERTED | NOT_LANDED
    created_at: datetime = _ts()
    broadcast_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class KeystoreKey(SQLModel, table=True):
    """A locally held private key, envelope-encrypted: AES-256-GCM under a per-key data key,
    which is itself wrapped by the key-encryption key from settings. No plaintext at rest."""

    __tablename__ = "keystore_keys"

    key_id: str = Field(primary_key=True)
    scheme: str  # secp256k1 | ed25519
    public_key: str  # hex
    ciphertext: bytes = Field(sa_type=sa.LargeBinary)
    nonce: bytes = Field(sa_type=sa.LargeBinary)
    wrapped_dek: bytes = Field(sa_type=sa.LargeBinary)
    dek_nonce: bytes = Field(sa_type=sa.LargeBinary)
    kek_id: str
    created_at: datetime = _ts()


# Pool tables live in their own module; importing it here registers them on SQLModel.metadata
# wherever the withdrawal tables are (Alembic, the API, the worker).
# They take their column helpers from models.columns, never from here (tests/test_import_graph.py).
from models import access as _access  # noqa: E402,F401
from models import policy as _policy  # noqa: E402,F401
from models import pools as _pools  # noqa: E402,F401
from models import webhooks as _webhooks  # noqa: E402,F401
