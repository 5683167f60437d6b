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

with workflow.unsafe.imports_passed_through():
    from activities.channels import ChannelActivities
    from models.payloads import ChannelSetResult
    from workflows.common import short_step

from workflows.children import wallet_child, withdrawal_child


@workflow.defn(name="ChannelAccountsWorkflow")
class ChannelAccountsWorkflow:
    @workflow.run
    async def run(self, chain: str) -> ChannelSetResult:
        chain = chain.lower()
        plan = await short_step(ChannelActivities.plan_wallets, chain)
        await asyncio.gather(*(wallet_child(w, f"Create {chain} channel account key") for w in plan.wallets))
        funding = await short_step(ChannelActivities.plan_funding, chain)
        await asyncio.gather(
            *(short_step(ChannelActivities.fund_from_faucet, wallet_id) for wallet_id in funding.faucet),
            *(withdrawal_child(chain, withdrawal_id, f"channels:{chain}", f"Fund a {chain} channel account") for withdrawal_id in funding.transfers),
        )
        result = await short_step(ChannelActivities.finish, chain)
        result.notes += funding.notes
        return result
