"""ChannelAccountsWorkflow (id ``channels-<chain>``): keep a Stellar chain's channel accounts
created, funded and READY (see activities/channels.py for what a channel is).

1. a wallet for every position without a live channel (child ``wallet-<id>``);
2. fund new and top up UNDERFUNDED channels: friendbot on test networks, else a withdrawal from
   ``channels.funding_wallet_id`` (child ``withdrawal-<id>``, the one exactly-once mechanism);
3. READY every channel whose spendable XLM is at least ``channels.min_balance``.

Started at worker start and every ``rebalance``-style interval by the schedule ``channels-<chain>``;
every step is idempotent, so an overlapping or reset run reaches the same rows and children.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.channels import ChannelActivities
    from activities.pools import PoolActivities
    from models import search_attributes
    from models.payloads import ChannelSetResult, WalletCreationInput, WithdrawalInput, WithdrawalStatus
    from workflows.common import RETRY_UNTIL_PERMANENT, SHORT_STEP

from workflows.rebalance import WAIT_ELSEWHERE, WAIT_HEARTBEAT
from workflows.wallet_creation import WalletCreationWorkflow
from workflows.withdrawal import WithdrawalWorkflow


@workflow.defn(name="ChannelAccountsWorkflow")
class ChannelAccountsWorkflow:
    @workflow.run
    async def run(self, chain: str) -> ChannelSetResult:
        chain = chain.lower()
        plan = await self._act(ChannelActivities.plan_wallets, chain)
        await asyncio.gather(*(self._make_wallet(chain, wallet_id) for wallet_id in plan.wallets))
        funding = await self._act(ChannelActivities.plan_funding, chain)
        await asyncio.gather(
            *(self._act(ChannelActivities.fund_from_faucet, wallet_id) for wallet_id in funding.faucet),
            *(self._fund(chain, withdrawal_id) for withdrawal_id in funding.transfers),
        )
        result = await self._act(ChannelActivities.finish, chain)
        result.notes += funding.notes
        return result

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

    async def _make_wallet(self, chain: str, wallet_id: str) -> None:
        try:
            await workflow.execute_child_workflow(
                WalletCreationWorkflow.run,
                WalletCreationInput(wallet_id=wallet_id),
                id=f"wallet-{wallet_id}",
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                static_summary=f"Create {chain} channel account key",
            )
        except WorkflowAlreadyStartedError:
            await self._wait_elsewhere(PoolActivities.wait_wallet, wallet_id)

    async def _fund(self, chain: str, withdrawal_id: str) -> None:
        try:
            await workflow.execute_child_workflow(
                WithdrawalWorkflow.run,
                WithdrawalInput(withdrawal_id=withdrawal_id, chain=chain),
                id=f"withdrawal-{withdrawal_id}",
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(search_attributes.CHAIN, chain),
                        SearchAttributePair(search_attributes.OWNER, f"channels:{chain}"),
                        SearchAttributePair(search_attributes.STATUS, WithdrawalStatus.PENDING.value),
                    ]
                ),
                static_summary=f"Fund a {chain} channel account",
            )
        except WorkflowAlreadyStartedError:
            await self._wait_elsewhere(PoolActivities.wait_withdrawal, withdrawal_id)
