"""What an operator action answers when the withdrawal went final between the route's status
check and the workflow update (found by `custody chaos`, fresh-clone run 51: a cancel retried
after a 503 whose first try had taken effect was answered WORKFLOW_NOT_RUNNING, "could not
happen", for a withdrawal that ended CANCELLED). The answer is the one the status check would
have given a moment later: the action's "already final" code with the final status.

The race is made deterministic: the route's session holds the row as it was before it went final
(set without marking it changed, so nothing writes it back), while the row and the workflow are
final."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import select

from api.routes import operations
from api.routes.operations import OperatorAction
from core.errors import OperationRefused
from core.identity import Identity, Role, Scope
from models.access import WithdrawalAction
from models.db import Withdrawal
from tests.conftest import create_wallet, fund, random_address, wait_for_status, withdraw

ALICE_ID = "alice"


async def test_a_cancel_that_meets_a_workflow_ended_meanwhile_answers_cancel_too_late(api: httpx.AsyncClient) -> None:
    wallet = await create_wallet(api)
    await fund(api, wallet, "1")
    accepted = (await withdraw(api, wallet, random_address(), "0.01")).json()
    done = await wait_for_status(api, accepted["id"], {"COMPLETED", "FAILED", "CANCELLED"})
    assert done["status"] == "COMPLETED", done
    state = api._transport.app.state.custody  # type: ignore[attr-defined]
    # The row goes final inside finish_withdrawal, a moment before the workflow learns it: until
    # the run is closed, a cancel is still accepted (fresh-clone run 90), which is not this race.
    await state.temporal.get_workflow_handle(done["workflow_id"]).result()
    caller = Identity(id=ALICE_ID, roles=frozenset({Role.USER}), scopes=frozenset(Scope), via="api_key:test")
    async with state.sessions() as session:
        stale = await session.get(Withdrawal, accepted["id"])
        assert stale is not None
        set_committed_value(stale, "status", "CONFIRMING")  # what the route read before the row went final
        with pytest.raises(OperationRefused) as refused:
            await operations.cancel(accepted["id"], OperatorAction(reason="retried after a 503"), caller, state, session)
    assert refused.value.code == "CANCEL_TOO_LATE" and "already COMPLETED" in refused.value.message, refused.value
    async with state.sessions() as session:
        row = await session.get(Withdrawal, accepted["id"])
        assert row is not None and row.status == "COMPLETED"  # nothing written back
        actions = (await session.exec(select(WithdrawalAction).where(WithdrawalAction.withdrawal_id == accepted["id"]))).all()
    assert [(a.action, a.state) for a in actions] == [("CANCEL", "REFUSED")]
