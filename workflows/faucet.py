"""FaucetWorkflow (id ``fund-<wallet_id>-<n>``): one test-network funding transfer, so the API
itself never touches a chain. Its result says what was funded (transaction and amount)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.faucet import FaucetActivities, FaucetInput, FaucetResult
    from workflows.common import SHORT_STEP

# Runs with this marker call faucet_fund (transaction and amount); earlier ones faucet_transfer.
FUNDED_AMOUNT_PATCH = "faucet-says-what-it-funded"


@workflow.defn(name="FaucetWorkflow")
class FaucetWorkflow:
    @workflow.run
    async def run(self, request: FaucetInput) -> FaucetResult:
        # A faucet send is not idempotent on chain: never retry it blindly.
        once = RetryPolicy(maximum_attempts=1)
        if workflow.patched(FUNDED_AMOUNT_PATCH):
            return await workflow.execute_activity_method(FaucetActivities.fund, request, start_to_close_timeout=SHORT_STEP, retry_policy=once)
        tx_hash = await workflow.execute_activity_method(FaucetActivities.transfer, request, start_to_close_timeout=SHORT_STEP, retry_policy=once)
        return FaucetResult(tx_hash=tx_hash, amount=request.amount or 0)
