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
from collections.abc import Awaitable, Callable

from temporalio import workflow
from temporalio.exceptions import ActivityError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.pools import CompleteRebalance, PoolActivities
    from activities.wallets import ActivateWalletInput
    from models.payloads import PoolPlan, PoolStepInput, PoolTransfer, PoolWalletRef, RebalanceInput, RebalanceResult
    from workflows.common import ArgT, ResultT, SelfT, failure_of, short_step

from workflows.children import wallet_child, withdrawal_child


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
    async def _act(self, activity: Callable[[SelfT, ArgT], Awaitable[ResultT]], arg: ArgT) -> ResultT:
        return await short_step(activity, arg)

    async def _make_wallets(self, chain: str, plan: PoolPlan) -> None:
        await asyncio.gather(*(self._make_wallet(chain, ref) for ref in plan.wallets))

    async def _make_wallet(self, chain: str, ref: PoolWalletRef) -> None:
        if not ref.via_child:
            # A HODL key on its own signer backend: the same two steps, in that backend.
            key = await self._act(PoolActivities.create_key, ref.wallet_id)
            await self._act(PoolActivities.activate_key, ActivateWalletInput(wallet_id=ref.wallet_id, key=key))
            return
        await wallet_child(ref.wallet_id, f"Create {chain} pool key")

    async def _run_transfers(self, chain: str, transfers: list[PoolTransfer]) -> None:
        await asyncio.gather(
            *(
                withdrawal_child(
                    chain,
                    t.withdrawal_id,
                    f"pool:{chain}",
                    f"Pool transfer of {t.asset} on {chain}",
                    asset=t.asset,
                    wait=t.wait,
                )
                for t in transfers
            )
        )
