"""WalletCreationWorkflow (id ``wallet-<wallet_id>``): a key in the signer backend, then an
active wallet with its derived address. Idempotent end to end: the key id is the wallet id."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.wallets import ActivateWalletInput, WalletActivities, WalletFailedInput
    from models.payloads import WalletCreationInput, WalletCreationResult
    from workflows.common import RETRY_UNTIL_PERMANENT, SHORT_STEP, failure_of


@workflow.defn(name="WalletCreationWorkflow")
class WalletCreationWorkflow:
    @workflow.run
    async def run(self, request: WalletCreationInput) -> WalletCreationResult:
        try:
            key = await workflow.execute_activity_method(
                WalletActivities.create_key,
                request.wallet_id,
                start_to_close_timeout=SHORT_STEP,
                retry_policy=RETRY_UNTIL_PERMANENT,
            )
            return await workflow.execute_activity_method(
                WalletActivities.activate,
                ActivateWalletInput(wallet_id=request.wallet_id, key=key),
                start_to_close_timeout=SHORT_STEP,
                retry_policy=RETRY_UNTIL_PERMANENT,
            )
        except ActivityError as e:
            code, message = failure_of(e)
            workflow.logger.warning("wallet creation failed: %s %s", code, message)
            await workflow.execute_activity_method(
                WalletActivities.mark_failed,
                WalletFailedInput(wallet_id=request.wallet_id, error_code=code),
                start_to_close_timeout=SHORT_STEP,
                retry_policy=RETRY_UNTIL_PERMANENT,
            )
            return WalletCreationResult(wallet_id=request.wallet_id, status="FAILED", error_code=code)
