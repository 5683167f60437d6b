"""WithdrawalWorkflow (id ``withdrawal-<withdrawal_id>``).

PENDING -> VALIDATING -> SIGNING -> BROADCASTING -> CONFIRMING -> COMPLETED | FAILED | CANCELLED

Every side effect is an idempotent activity; this class only decides the order. Permanent
errors arrive as non-retryable ApplicationErrors whose type is the stable error code.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.withdrawals import BumpInput, FinishInput, ResignInput, WithdrawalActivities
    from models import search_attributes
    from models.payloads import (
        ConfirmationResult,
        OnChainState,
        StatusChange,
        WithdrawalInput,
        WithdrawalResult,
        WithdrawalStatus,
    )
    from workflows.common import RETRY_UNTIL_PERMANENT, SHORT_STEP, failure_of

CONFIRMATION_WAIT = timedelta(minutes=15)
CONFIRMATION_HEARTBEAT = timedelta(seconds=30)

FAILURE_OF_OUTCOME = {
    OnChainState.REVERTED: ("TRANSACTION_REVERTED", "the transaction was mined but reverted; its fee is spent"),
    OnChainState.SLOT_LOST: ("SLOT_CONSUMED_EXTERNALLY", "the nonce was used by a transaction that is not ours"),
}


@workflow.defn(name="WithdrawalWorkflow")
class WithdrawalWorkflow:
    def __init__(self) -> None:
        self._status = WithdrawalStatus.PENDING
        self._tx_hash: str | None = None
        self._attempts = 0
        self._error_code: str | None = None

    @workflow.query(name="state")
    def state(self) -> WithdrawalResult:
        return WithdrawalResult(
            withdrawal_id=workflow.info().workflow_id.removeprefix("withdrawal-"),
            status=self._status,
            tx_hash=self._tx_hash,
            error_code=self._error_code,
        )

    @workflow.run
    async def run(self, request: WithdrawalInput) -> WithdrawalResult:
        wid = request.withdrawal_id
        try:
            await self._set_status(wid, WithdrawalStatus.VALIDATING)
            await self._step(WithdrawalActivities.validate, wid)
            await self._step(WithdrawalActivities.reserve, wid)
            await self._set_status(wid, WithdrawalStatus.SIGNING)
            self._track(await self._step(WithdrawalActivities.prepare, wid))
            await self._set_status(wid, WithdrawalStatus.BROADCASTING)
            await self._step(WithdrawalActivities.broadcast, wid)
            await self._set_status(wid, WithdrawalStatus.CONFIRMING)
            outcome = await self._confirm(wid)
        except ActivityError as e:
            code, message = failure_of(e)
            return await self._finish(wid, WithdrawalStatus.FAILED, None, code, message)
        if outcome.state == OnChainState.CONFIRMED:
            return await self._finish(wid, WithdrawalStatus.COMPLETED, outcome)
        code, message = FAILURE_OF_OUTCOME[outcome.state]
        return await self._finish(wid, WithdrawalStatus.FAILED, outcome, code, message)

    async def _confirm(self, wid: str) -> ConfirmationResult:
        while True:
            result = await workflow.execute_activity_method(
                WithdrawalActivities.await_confirmation,
                wid,
                start_to_close_timeout=CONFIRMATION_WAIT,
                heartbeat_timeout=CONFIRMATION_HEARTBEAT,
                retry_policy=RETRY_UNTIL_PERMANENT,
            )
            if result.state == OnChainState.EXPIRED and self._tx_hash is not None:
                # Provably never applied: a new attempt in a new slot is the same transfer.
                self._track(
                    await self._step(WithdrawalActivities.resign_expired, ResignInput(wid, self._tx_hash))
                )
                await self._step(WithdrawalActivities.broadcast, wid)
                continue
            if result.state != OnChainState.PENDING:
                return result
            if result.block_number is None and self._tx_hash is not None:
                # Not mined within the chain's bump delay: replace inside the same nonce.
                self._track(await self._step(WithdrawalActivities.bump, BumpInput(wid, self._tx_hash)))
                await self._step(WithdrawalActivities.broadcast, wid)

    def _track(self, prepared) -> None:  # type: ignore[no-untyped-def]
        self._tx_hash = prepared.tx_hash
        self._attempts = prepared.attempt_count

    async def _step(self, activity, arg):  # type: ignore[no-untyped-def]
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=SHORT_STEP, retry_policy=RETRY_UNTIL_PERMANENT
        )

    async def _set_status(self, wid: str, status: WithdrawalStatus) -> None:
        self._status = status
        workflow.upsert_search_attributes([search_attributes.STATUS.value_set(status.value)])
        await self._step(WithdrawalActivities.record_status, StatusChange(wid, status))

    async def _finish(
        self,
        wid: str,
        status: WithdrawalStatus,
        outcome: ConfirmationResult | None,
        code: str | None = None,
        message: str | None = None,
    ) -> WithdrawalResult:
        if outcome is not None and outcome.tx_hash:
            self._tx_hash = outcome.tx_hash
        await self._step(
            WithdrawalActivities.finish,
            FinishInput(wid, status, outcome, error_code=code, error_message=message),
        )
        self._status, self._error_code = status, code
        workflow.upsert_search_attributes([search_attributes.STATUS.value_set(status.value)])
        if code:
            workflow.logger.warning("withdrawal failed: %s %s", code, message)
        return WithdrawalResult(wid, status, self._tx_hash, code, message)
