"""FaucetWorkflow (id ``fund-<wallet_id>-<n>``): one test-network funding transfer, so the API
itself never touches a chain."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.faucet import FaucetActivities, FaucetInput
    from workflows.common import SHORT_STEP


@workflow.defn(name="FaucetWorkflow")
class FaucetWorkflow:
    @workflow.run
    async def run(self, request: FaucetInput) -> str:
        # A faucet send is not idempotent on chain: never retry it blindly.
        return await workflow.execute_activity_method(
            FaucetActivities.transfer,
            request,
            start_to_close_timeout=SHORT_STEP,
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
