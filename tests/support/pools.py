"""Key pools in tests (tests/workflows/test_pools*.py, test_replay, the console): a pool on an alias
of the session's anvil, a rebalance run, and what the API shows of a pool."""

from __future__ import annotations

import uuid

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy

from core.settings import PoolSettings, Settings
from models.payloads import RebalanceInput, RebalanceResult
from tests.conftest import OPS, wait_for_status
from workflows.rebalance import RebalanceWorkflow


def pool_settings(**overrides) -> PoolSettings:  # type: ignore[no-untyped-def]
    values = dict(
        min_available_explorers=2,
        explorers_to_create=2,
        explorer_target_balance="0.01",
        bank_count=1,
        bank_target_balance="0.1",
        hodl_auto_approve_up_to="0",
        lease_seconds=600,
        rebalance_interval_seconds=3600,
    )
    return PoolSettings(**(values | overrides))


def with_pool(base: Settings, task_queue: str, chain: str, pool: PoolSettings) -> Settings:
    """The session's anvil under another name, with a key pool on it."""
    anvil = base.chains["anvil"]
    return base.model_copy(update={"task_queue": task_queue, "chains": {**base.chains, chain: anvil}, "pools": {chain: pool}})


async def rebalance(client: Client, settings: Settings, chain: str, workflow_id: str | None = None) -> RebalanceResult:
    return await client.execute_workflow(
        RebalanceWorkflow.run,
        RebalanceInput(chain=chain),
        id=workflow_id or f"rebalance-{chain}-test-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


async def show(api, chain: str) -> dict:  # type: ignore[no-untyped-def]
    response = await api.get(f"/v1/pools/{chain}", headers=OPS)
    assert response.status_code == 200, response.text
    return response.json()


def keys_of(pool: dict, tier: str, *states: str) -> list[dict]:
    return [k for k in pool["keys"] if k["tier"] == tier and (not states or k["state"] in states)]


async def withdrawal(api, withdrawal_id: str) -> dict:  # type: ignore[no-untyped-def]
    return (await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=OPS)).json()


async def approve(api, withdrawal_id: str) -> None:  # type: ignore[no-untyped-def]
    """An operator approves a HODL movement (four eyes: the rebalance asked, ops approves)."""
    await wait_for_status(api, withdrawal_id, {"AWAITING_APPROVAL"}, headers=OPS)
    assert (await api.post(f"/v1/withdrawals/{withdrawal_id}/approve", json={}, headers=OPS)).status_code == 200
    assert (await wait_for_status(api, withdrawal_id, {"COMPLETED", "FAILED"}, headers=OPS))["status"] == "COMPLETED"
