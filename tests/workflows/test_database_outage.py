"""PostgreSQL out of reach (restarting, failing over) is a transient condition with a code of
its own, not a bug: the API answers 503 DATABASE_UNAVAILABLE (clients send again) and
activities fail DATABASE_UNAVAILABLE, retried until it is back, neither counted as unexpected
errors nor alerted as stuck. Found by `custody chaos`: a PostgreSQL restart made the API answer
500 INTERNAL_ERROR and every activity in flight fail with UNEXPECTED_ERROR."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from prometheus_client import REGISTRY

from db.engine import create_engine, create_session_factory
from models import search_attributes
from models.payloads import WithdrawalInput
from tests.conftest import ALICE, api_client, replay_and_record
from workflows.withdrawal import WithdrawalWorkflow


def postgres_down(settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The settings with PostgreSQL's socket directory gone, as while it restarts."""
    return settings.model_copy(update={"database_url": f"postgresql+asyncpg://postgres@/postgres?host={tmp_path / 'pg-down'}"})


async def test_the_api_answers_503_database_unavailable_while_postgresql_is_down(settings, client, tmp_path) -> None:
    async with api_client(postgres_down(settings, tmp_path), client) as api:
        listed = await api.get("/v1/wallets", headers=ALICE)
        assert listed.status_code == 503 and listed.json()["error"]["code"] == "DATABASE_UNAVAILABLE", listed.text
        body = {"wallet_id": str(uuid.uuid4()), "to": "0x000000000000000000000000000000000000dEaD", "asset": "ETH", "amount": "1"}
        created = await api.post("/v1/withdrawals", json=body, headers={**ALICE, "Idempotency-Key": uuid.uuid4().hex})
        assert created.status_code == 503 and created.json()["error"]["code"] == "DATABASE_UNAVAILABLE", created.text


def _unexpected(activity: str) -> float:
    return sum(
        s.value
        for m in REGISTRY.collect()
        if m.name == "custody_activity_unexpected_errors"
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("activity") == activity
    )


async def test_activities_fail_database_unavailable_and_are_retried_while_postgresql_is_down(settings, client, tmp_path) -> None:
    from worker import build_worker

    down = postgres_down(settings, tmp_path)
    engine = create_engine(down.database_url)
    before = _unexpected("record_withdrawal_status")
    try:
        async with build_worker(client, down, create_session_factory(engine)):
            withdrawal_id = str(uuid.uuid4())
            handle = await client.start_workflow(
                WithdrawalWorkflow.run,
                WithdrawalInput(withdrawal_id=withdrawal_id, chain="anvil"),
                id=f"withdrawal-{withdrawal_id}",
                task_queue=down.task_queue,
            )
            try:
                for _ in range(150):
                    pending = (await handle.describe()).raw_description.pending_activities
                    if pending and pending[0].attempt >= 3:
                        break
                    await asyncio.sleep(0.1)
                assert pending and pending[0].attempt >= 3, pending
                # Run locally first (local-steps): failing on its one local attempt, the
                # step went on as a server activity, pending in the Web UI with its attempts.
                assert pending[0].activity_type.name == "validate_and_decide_withdrawal", pending
                failure = pending[0].last_failure
                assert failure.application_failure_info.type == "DATABASE_UNAVAILABLE", failure
                assert not failure.application_failure_info.non_retryable
                assert _unexpected("record_withdrawal_status") == before
                # The workflow task ended in VALIDATING: the Web UI's status filter shows it
                # (one-send-step upserts VALIDATING only when a task may end in it).
                shown = (await handle.describe()).typed_search_attributes.get(search_attributes.STATUS)
                assert shown == "VALIDATING", shown
            finally:
                await handle.terminate("test over")
            # one-send-step, validation handed to the server: VALIDATING upserted before it
            await replay_and_record(client, handle.id, "WithdrawalWorkflow__v9_validation_handed_to_the_server")
    finally:
        await engine.dispose()
