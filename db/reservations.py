"""What a wallet's in-flight withdrawals hold (HELD reservations), summed by PostgreSQL.

One grouped query instead of loading every HELD row: a wallet with many withdrawals in flight is
exactly when reserving, the balances page and pool planning run most, and each loaded row was an
ORM object built only to be added up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.db import Reservation


@dataclass(frozen=True)
class HeldFunds:
    """Amounts held per asset, and the fees held (always in the chain's native asset)."""

    amounts: dict[str, int] = field(default_factory=dict)
    fees: int = 0

    def of(self, asset: str) -> int:
        """Held of `asset` as amounts being sent (fees not included)."""
        return self.amounts.get(asset, 0)

    def native(self, native_symbol: str) -> int:
        """Held of the native asset: every fee, plus native amounts being sent."""
        return self.fees + self.of(native_symbol)

    def by_asset(self, native_symbol: str) -> dict[str, int]:
        """What each asset has held, fees counted under the native asset."""
        held = dict(self.amounts)
        if self.fees or native_symbol in held:
            held[native_symbol] = self.native(native_symbol)
        return held


async def held_funds(session: AsyncSession, wallet_id: str) -> HeldFunds:
    rows = await session.exec(
        select(col(Reservation.asset), sa.func.sum(col(Reservation.amount)), sa.func.sum(col(Reservation.fee_amount)))
        .where(Reservation.wallet_id == wallet_id, Reservation.state == "HELD")
        .group_by(col(Reservation.asset))
    )
    amounts: dict[str, int] = {}
    fees = 0
    for asset, amount, fee in rows.all():
        amounts[asset] = int(amount)
        fees += int(fee)
    return HeldFunds(amounts, fees)
