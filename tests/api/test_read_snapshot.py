"""A withdrawal's detail is read from one snapshot: its row, history and attempts agree with each
other even while the worker commits a step between the API's statements (READ COMMITTED gave a
row from before a commit and attempts from after it: an attempt with its nonce, the row without)."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.util import await_only

from api.main import create_app
from models.db import TransferAttempt, WithdrawalEvent
from tests.conftest import ALICE, create_wallet, fund, random_address, wait_for_status, withdraw


async def test_a_step_committed_between_the_apis_reads_is_not_half_shown(settings, client, sessions, worker):
    app = create_app(settings, temporal=client)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://custody.test") as api:
            wallet = await create_wallet(api)
            await fund(api, wallet, "1")
            created = await withdraw(api, wallet, random_address(), "0.1")
            withdrawal_id = created.json()["id"]
            before = await wait_for_status(api, withdrawal_id, {"COMPLETED"})

            async def commit_a_step_meanwhile() -> None:
                # What a worker's step commits in one transaction: an attempt and its history entry.
                async with sessions() as session, session.begin():
                    session.add(
                        TransferAttempt(
                            withdrawal_id=withdrawal_id,
                            chain="anvil",
                            sender=wallet["address"],
                            sequence=99,
                            tx_hash="0x" + "ab" * 32,
                            raw_tx="0x00",
                            max_fee=1,
                        )
                    )
                    session.add(WithdrawalEvent(withdrawal_id=withdrawal_id, status="CONFIRMING", detail={}))

            api_engine = app.state.custody.sessions.kw["bind"].sync_engine
            committed: list[bool] = []

            def after_the_rows_read(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if not committed and "FROM withdrawals" in statement and "withdrawals.id =" in statement:
                    committed.append(True)
                    await_only(commit_a_step_meanwhile())

            event.listen(api_engine, "after_cursor_execute", after_the_rows_read)
            try:
                shown = (await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=ALICE)).json()
            finally:
                event.remove(api_engine, "after_cursor_execute", after_the_rows_read)
            assert committed, "the hook never ran between the API's reads"
            # The snapshot of the first read: the step committed after it is not shown in part.
            assert shown["attempts"] == before["attempts"]
            assert shown["history"] == before["history"]
            after = (await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=ALICE)).json()
            assert len(after["attempts"]) == len(before["attempts"]) + 1
