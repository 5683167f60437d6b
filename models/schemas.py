"""API request and response models. Amounts are decimal strings here and nowhere else."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class WalletCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chain: str = Field(min_length=1, max_length=64, examples=["anvil"])
    label: str = Field(default="default", min_length=1, max_length=100)


class WalletPublic(BaseModel):
    id: str
    owner: str
    chain: str
    label: str
    status: str
    address: str | None
    signer_backend: str
    error_code: str | None = None
    frozen_at: datetime | None = Field(default=None, description="set while an admin keeps the wallet frozen: nothing is signed from it")
    frozen_reason: str | None = None
    created_at: datetime


class WalletList(BaseModel):
    items: list[WalletPublic]


class AssetBalance(BaseModel):
    asset: str
    contract: str | None
    decimals: int
    balance: str  # decimal string in the asset's unit
    balance_base_units: str
    reserved: str


class WalletBalances(BaseModel):
    wallet_id: str
    chain: str
    address: str
    funded: bool = Field(
        description="the account exists on chain: false for a Stellar wallet until it receives its first 1 XLM "
        "(create_account), or a Solana wallet before its first lamports"
    )
    balances: list[AssetBalance]


class FundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asset: str | None = Field(default=None, description="default: the chain's native asset")
    amount: str | None = Field(
        default=None,
        max_length=100,
        examples=["1.5"],
        description="decimal, in the asset's unit; required except where the faucet funds a fixed amount (Stellar's friendbot: leave it out)",
    )


class FundResult(BaseModel):
    wallet_id: str
    asset: str
    amount: str = Field(description="what was funded (friendbot's own fixed amount on Stellar)")
    amount_base_units: str
    tx_hash: str
    remaining_today: int


class MemoIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "id", "hash"]
    value: str = Field(min_length=1, max_length=64)


class HandleRecipient(BaseModel):
    """Pay another custody user: their active wallet on the same chain."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=100)


class WithdrawalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wallet_id: str
    to: str | HandleRecipient = Field(description='destination address, or {"handle": "<user>"}')
    asset: str = Field(min_length=1, max_length=32, examples=["ETH"])
    amount: str = Field(min_length=1, max_length=100, description="decimal string in the asset's unit", examples=["0.25"])
    memo: MemoIn | None = Field(default=None, description="Stellar memo (text, id or hash); refused on EVM")


class TrustlineCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    asset: str = Field(min_length=1, max_length=32, description="a credit asset configured on the wallet's chain", examples=["USDC"])


class WithdrawalEventPublic(BaseModel):
    status: str
    at: datetime
    detail: dict[str, Any]


class TransferAttemptPublic(BaseModel):
    tx_hash: str
    nonce: int | None
    state: str = Field(
        description="SIGNED, BROADCAST; once the withdrawal is final LANDED (this transaction is on chain), "
        "REVERTED (on chain, transfer undone) or NOT_LANDED (replaced, expired or never sent)"
    )
    purpose: str
    # The account whose nonce / sequence number it takes where that is not the wallet (a Stellar
    # channel account, which also pays the fee); None: the wallet.
    source: str | None = None
    created_at: datetime
    broadcast_at: datetime | None


class PolicyDecisionPublic(BaseModel):
    """One judgement by the policy engine: DECIDE before funds were held, RECHECK before signing."""

    stage: str
    policy_version: int
    rule_id: str
    rule_name: str
    outcome: str
    reason: str
    quorum: dict[str, Any] | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class WithdrawalPublic(BaseModel):
    id: str
    kind: str = Field(default="TRANSFER", description="TRANSFER, or TRUSTLINE (the wallet's own change_trust)")
    wallet_id: str
    owner: str
    chain: str
    asset: str
    to: str
    recipient_owner: str | None = None
    retry_of: str | None = None
    amount: str | None = Field(description="in the asset's unit; null once the chain or asset is no longer configured (amount_base_units stands)")
    amount_base_units: str
    memo: MemoIn | None = None
    status: str
    paused: bool = False
    paused_by: str | None = None
    paused_reason: str | None = None
    approved_by: str | None = None
    cancel_requested_by: str | None = None
    error_code: str | None
    error_message: str | None
    tx_hash: str | None
    nonce: int | None
    block_number: int | None
    fee_paid_base_units: str | None
    workflow_id: str
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    history: list[WithdrawalEventPublic] = Field(default_factory=list)
    attempts: list[TransferAttemptPublic] = Field(default_factory=list)
    # The policy decision it was judged by (the rule, the policy version, the outcome); the
    # detail view adds every decision and the approvals recorded so far.
    policy_version: int | None = None
    policy_rule_id: str | None = None
    policy_outcome: str | None = None
    policy_decisions: list[PolicyDecisionPublic] = Field(default_factory=list)
    approvals: list[str] = Field(default_factory=list)


class WithdrawalList(BaseModel):
    items: list[WithdrawalPublic]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody
