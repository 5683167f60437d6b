"""ReconciliationWorkflow: one chain's wallets, on chain, against the database's view of them.

Scheduled runs come from the Temporal Schedule `reconcile-<chain>` (workflow ids
`reconcile-<chain>-<scheduled time>`, overlap SKIP, every `reconciliation.interval_seconds`);
`custody reconcile --chain C` (POST /v1/admin/reconciliation/{chain}/runs) starts one now. Three
steps (activities/reconciliation.py): discover transfers on chain since the last checkpoint,
re-verify COMPLETED withdrawals up to finality, then the report (balances and drift, vanished
withdrawals, spends no withdrawal explains), stored under the run's workflow id. Every step is
resumable, so a retried or reset run only redoes reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.reconciliation import ReconciliationActivities
    from models.payloads import ReconciliationInput, ReconciliationResult, ReconciliationStep
    from workflows.common import ArgT, ResultT, SelfT

# Node trouble is retried a while; a run that still cannot finish fails and the next scheduled
# run starts over from the stored checkpoints.
RECONCILE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
)
STEP_TIMEOUT = timedelta(minutes=20)
STEP_HEARTBEAT = timedelta(minutes=2)


@workflow.defn(name="ReconciliationWorkflow")
class ReconciliationWorkflow:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query(name="step")
    def step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, request: ReconciliationInput) -> ReconciliationResult:
        step = ReconciliationStep(chain=request.chain.lower(), run_key=workflow.info().workflow_id)
        self._step = "discover"
        await self._act(ReconciliationActivities.discover, step)
        self._step = "verify_completed"
        await self._act(ReconciliationActivities.verify_completed, step)
        self._step = "report"
        result: ReconciliationResult = await self._act(ReconciliationActivities.report, step)
        self._step = "done"
        if result.status != "OK":
            workflow.logger.warning(
                "reconciliation of %s: %s drifting, %s vanished, %s unexplained",
                step.chain,
                result.drifting,
                len(result.vanished),
                result.unexplained,
            )
        return result

    async def _act(self, activity: Callable[[SelfT, ArgT], Awaitable[ResultT]], arg: ArgT) -> ResultT:
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=STEP_TIMEOUT, heartbeat_timeout=STEP_HEARTBEAT, retry_policy=RECONCILE_RETRY
        )
