"""RebalanceWorkflow: keep one chain's key pool in shape (seed 004), in this order:

1. recover retired explorers into the bank that funded them (sweeps: zero dust);
2. top up underfunded banks from HODL (above `hodl_auto_approve_up_to`: waits for an operator,
   through the ordinary four-eyes `approve` of the HODL withdrawal; the run does not block on it);
3. create and fund new explorers while fewer than `min_available_explorers` are available.

Scheduled runs come from the Temporal Schedule `rebalance-<chain>` (workflow ids
`rebalance-<chain>-<scheduled time>`, overlap SKIP); `custody pools rebalance <chain>` triggers it.
The run's workflow id is the key every pool wallet and pool withdrawal derives its idempotency
key from, so a retried, replayed or reset run finds the same rows and the same children:
pool wallets are made by child `wallet-<id>` (WalletCreationWorkflow), pool transfers are child
`withdrawal-<id>` (WithdrawalWorkflow), both abandoned rather than killed if this run ends.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.pools import CompleteRebalance, PoolActivities
    from activities.wallets import ActivateWalletInput
    from models import search_attributes
    from models.payloads import (
        PoolPlan,
        PoolStepInput,
        PoolTransfer,
        PoolWalletRef,
        RebalanceInput,
        RebalanceResult,
        WalletCreationInput,
        WithdrawalInput,
        WithdrawalStatus,
    )
    from workflows.common import RETRY_UNTIL_PERMANENT, SHORT_STEP, failure_of

from workflows.wallet_creation import WalletCreationWorkflow
from workflows.withdrawal import WithdrawalWorkflow

WAIT_ELSEWHERE = timedelta(hours=2)  # a pool movement another run started (it heartbeats)
WAIT_HEARTBEAT = timedelta(seconds=30)


@workflow.defn(name="RebalanceWorkflow")
class RebalanceWorkflow:
    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query(name="step")
    def step(self) -> str:
        return self._step

    @workflow.run
    async def run(self, request: RebalanceInput) -> RebalanceResult:
        info = workflow.info()
        chain = request.chain.lower()
        step = PoolStepInput(chain=chain, run_key=info.workflow_id, run_id=info.run_id)
        result = RebalanceResult(chain=chain, run_key=info.workflow_id)
        try:
            self._step = "keys"
            plan = await self._act(PoolActivities.begin, step)
            await self._make_wallets(chain, plan)

            self._step = "recover"
            plan = await self._act(PoolActivities.plan_recovery, step)
            result.notes += plan.notes
            await self._run_transfers(chain, plan.transfers)
            result.recovered = await self._act(PoolActivities.finish_recovery, step)

            self._step = "fund_banks"
            plan = await self._act(PoolActivities.plan_bank_topups, step)
            result.notes += plan.notes
            await self._run_transfers(chain, plan.transfers)
            result.pending_approvals = [t.withdrawal_id for t in plan.transfers if not t.wait]
            result.banks_funded = await self._act(PoolActivities.finish_bank_topups, step)

            self._step = "create_explorers"
            plan = await self._act(PoolActivities.plan_explorers, step)
            result.notes += plan.notes
            await self._make_wallets(chain, plan)
            plan = await self._act(PoolActivities.plan_explorer_funding, step)
            result.notes += plan.notes
            await self._run_transfers(chain, plan.transfers)
            result.explorers_created = await self._act(PoolActivities.finish_explorer_funding, step)
            result.status = "COMPLETED"
        except (ActivityError, ChildWorkflowError) as e:
            code, message = failure_of(e) if isinstance(e, ActivityError) else ("CHILD_FAILED", str(e.cause or e))
            result.status, result.error_code, result.error_message = "FAILED", code, message
            workflow.logger.warning("rebalance of %s failed in %s: %s %s", chain, self._step, code, message)
        self._step = "done"
        await self._act(PoolActivities.complete, CompleteRebalance(result))
        return result

    # --- helpers ---------------------------------------------------------------------------
    async def _act(self, activity, arg):  # type: ignore[no-untyped-def]
        return await workflow.execute_activity_method(
            activity, arg, start_to_close_timeout=SHORT_STEP, retry_policy=RETRY_UNTIL_PERMANENT
        )

    async def _wait_elsewhere(self, activity, arg):  # type: ignore[no-untyped-def]
        return await workflow.execute_activity_method(
            activity,
            arg,
            start_to_close_timeout=WAIT_ELSEWHERE,
            heartbeat_timeout=WAIT_HEARTBEAT,
            retry_policy=RETRY_UNTIL_PERMANENT,
        )

    async def _make_wallets(self, chain: str, plan: PoolPlan) -> None:
        await asyncio.gather(*(self._make_wallet(chain, ref) for ref in plan.wallets))

    async def _make_wallet(self, chain: str, ref: PoolWalletRef) -> None:
        if not ref.via_child:
            # A HODL key on its own signer backend: the same two steps, in that backend.
            key = await self._act(PoolActivities.create_key, ref.wallet_id)
            await self._act(PoolActivities.activate_key, ActivateWalletInput(wallet_id=ref.wallet_id, key=key))
            return
        try:
            await workflow.execute_child_workflow(
                WalletCreationWorkflow.run,
                WalletCreationInput(wallet_id=ref.wallet_id),
                id=f"wallet-{ref.wallet_id}",
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"Create {chain} pool key",
            )
        except WorkflowAlreadyStartedError:
            await self._wait_elsewhere(PoolActivities.wait_wallet, ref.wallet_id)

    async def _run_transfers(self, chain: str, transfers: list[PoolTransfer]) -> None:
        await asyncio.gather(*(self._transfer(chain, t) for t in transfers))

    async def _transfer(self, chain: str, transfer: PoolTransfer) -> None:
        try:
            handle = await workflow.start_child_workflow(
                WithdrawalWorkflow.run,
                WithdrawalInput(withdrawal_id=transfer.withdrawal_id, chain=chain),
                id=f"withdrawal-{transfer.withdrawal_id}",
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(search_attributes.CHAIN, chain),
                        SearchAttributePair(search_attributes.ASSET, transfer.asset),
                        SearchAttributePair(search_attributes.OWNER, f"pool:{chain}"),
                        SearchAttributePair(search_attributes.STATUS, WithdrawalStatus.PENDING.value),
                    ]
                ),
                static_summary=f"Pool transfer of {transfer.asset} on {chain}",
            )
        except WorkflowAlreadyStartedError:
            # Started by an earlier (crashed or overlapping) run: the same row, the same transfer.
            if transfer.wait:
                await self._wait_elsewhere(PoolActivities.wait_withdrawal, transfer.withdrawal_id)
            return
        if transfer.wait:
            await handle
