"""A withdrawal row seen as the chain sees it: its transfer intent and its signed attempts, and
whether any of them can still land. Shared by the withdrawal activities and by the API, which
must refuse a retry while the original could still pay (a read of chain state, nothing sent)."""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from chains.base import Chain, Memo, SignedTransfer, TransferIntent
from models.db import SequenceClaim, TransferAttempt, Wallet, Withdrawal
from models.payloads import OnChainState


def transfer_intent(chain: Chain, withdrawal: Withdrawal, wallet: Wallet) -> TransferIntent:
    """What the withdrawal moves, in the chain's canonical forms (raises INVALID_RECIPIENT,
    UNKNOWN_ASSET, INVALID_MEMO)."""
    assert wallet.address is not None
    memo = None
    if withdrawal.memo_type is not None and withdrawal.memo_value is not None:
        memo = chain.validate_memo(Memo(withdrawal.memo_type, withdrawal.memo_value))
    return TransferIntent(
        sender=wallet.address,
        destination=chain.normalize_address(withdrawal.destination),
        asset=chain.asset(withdrawal.asset),
        amount=withdrawal.amount,
        memo=memo,
        sweep=withdrawal.sweep,
        trustline=withdrawal.kind == "TRUSTLINE",
    )


def as_signed(attempt: TransferAttempt) -> SignedTransfer:
    return SignedTransfer(
        tx_hash=attempt.tx_hash,
        raw_tx=attempt.raw_tx,
        sequence=attempt.sequence,
        max_fee=attempt.max_fee,
        fee_params=attempt.fee_params,
        purpose=attempt.purpose,
    )


async def attempts_of(session: AsyncSession, withdrawal_id: str) -> list[TransferAttempt]:
    rows = await session.exec(select(TransferAttempt).where(TransferAttempt.withdrawal_id == withdrawal_id).order_by(col(TransferAttempt.id)))
    return list(rows.all())


async def released_slot(session: AsyncSession, withdrawal: Withdrawal) -> SequenceClaim | None:
    """The slot a withdrawal handed back unused (it ended before its transaction went out), if
    no other transaction of ours has taken it since."""
    rows = await session.exec(select(SequenceClaim).where(SequenceClaim.withdrawal_id == withdrawal.id, SequenceClaim.state == "RELEASED"))
    return rows.first()


async def may_still_land(chain: Chain, intent: TransferIntent, attempts: list[TransferAttempt]) -> OnChainState | None:
    """None when no attempt can land any more; otherwise the chain's word (PENDING: one still
    can; CONFIRMED: one did)."""
    if not attempts:
        return None
    status = await chain.transfer_status(intent, [as_signed(a) for a in attempts])
    if status.state in (OnChainState.PENDING, OnChainState.CONFIRMED):
        return status.state
    return None
