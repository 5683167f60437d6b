"""db/reservations.py against PostgreSQL: what a wallet's in-flight withdrawals hold, summed per
asset with fees under the native asset, only HELD rows of that wallet, exact at uint256 size."""

from __future__ import annotations

import uuid

from db.reservations import held_funds
from models.db import Reservation, Wallet, Withdrawal

WEI = 10**18
HUGE = 2**200  # beyond any float or int64: the sum stays exact


async def _wallet_with_reservations(sessions, holds: list[tuple[str, int, int, str]]) -> str:  # type: ignore[no-untyped-def]
    """A wallet with one withdrawal per (asset, amount, fee, state) and its reservation."""
    async with sessions() as session, session.begin():
        wallet = Wallet(id=str(uuid.uuid4()), owner="alice", chain="anvil", label=uuid.uuid4().hex, status="ACTIVE", signer_backend="local")
        session.add(wallet)
        await session.flush()
        for asset, amount, fee, state in holds:
            withdrawal = Withdrawal(
                id=str(uuid.uuid4()),
                owner="alice",
                wallet_id=wallet.id,
                chain="anvil",
                asset=asset,
                destination="0x",
                amount=amount,
                idempotency_key=uuid.uuid4().hex,
                request_hash="h",
            )
            session.add(withdrawal)
            await session.flush()
            session.add(Reservation(withdrawal_id=withdrawal.id, wallet_id=wallet.id, asset=asset, amount=amount, fee_amount=fee, state=state))
    return wallet.id


async def test_held_funds_sums_a_wallets_held_reservations_with_fees_under_the_native_asset(sessions) -> None:  # type: ignore[no-untyped-def]
    wallet_id = await _wallet_with_reservations(
        sessions,
        [
            ("ETH", 1 * WEI, 10, "HELD"),
            ("TUSD", 5, 20, "HELD"),
            ("ETH", HUGE, 30, "HELD"),
            ("ETH", 7 * WEI, 100, "RELEASED"),  # given back: no longer held
            ("TUSD", 9, 100, "SETTLED"),  # paid: no longer held
        ],
    )
    other = await _wallet_with_reservations(sessions, [("ETH", 3 * WEI, 1, "HELD")])
    async with sessions() as session:
        held = await held_funds(session, wallet_id)
        others = await held_funds(session, other)
    assert held.amounts == {"ETH": WEI + HUGE, "TUSD": 5} and held.fees == 60
    assert held.native("ETH") == WEI + HUGE + 60 and held.of("TUSD") == 5 and held.of("USDC") == 0
    assert held.by_asset("ETH") == {"ETH": WEI + HUGE + 60, "TUSD": 5}
    assert others.by_asset("ETH") == {"ETH": 3 * WEI + 1}


async def test_a_wallet_holding_nothing_holds_zero_and_a_token_only_hold_still_holds_its_fee_in_native(sessions) -> None:  # type: ignore[no-untyped-def]
    empty = await _wallet_with_reservations(sessions, [])
    token_only = await _wallet_with_reservations(sessions, [("TUSD", 5, 20, "HELD")])
    async with sessions() as session:
        nothing = await held_funds(session, empty)
        fee_only = await held_funds(session, token_only)
    assert (nothing.amounts, nothing.fees, nothing.native("ETH"), nothing.by_asset("ETH")) == ({}, 0, 0, {})
    assert fee_only.native("ETH") == 20 and fee_only.by_asset("ETH") == {"TUSD": 5, "ETH": 20}
