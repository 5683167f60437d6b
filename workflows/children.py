"""Steps shared by the workflows that keep system keys (RebalanceWorkflow, ChannelAccountsWorkflow):
a short activity retried until it passes or fails permanently, a wait on work another run started,
a wallet made by a child ``wallet-<id>``, a transfer made by a child ``withdrawal-<id>``.

Children are abandoned, not killed, when the parent ends, and started with REJECT_DUPLICATE: a
second run (overlapping, retried, reset) finds the same child running and waits for its row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.pools import PoolActivities
    from models import search_attributes
    from models.payloads import WalletCreationInput, WithdrawalInput, WithdrawalStatus
    from workflows.common import RETRY_UNTIL_PERMANENT, ArgT, ResultT, SelfT

from workflows.wallet_creation import WalletCreationWorkflow
from workflows.withdrawal import WithdrawalWorkflow

WAIT_ELSEWHERE = timedelta(hours=2)  # a movement another run started (it heartbeats)
WAIT_HEARTBEAT = timedelta(seconds=30)


async def wait_elsewhere(activity: Callable[[SelfT, ArgT], Awaitable[ResultT]], arg: ArgT) -> ResultT:
    return await workflow.execute_activity_method(
        activity,
        arg,
        start_to_close_timeout=WAIT_ELSEWHERE,
        heartbeat_timeout=WAIT_HEARTBEAT,
        retry_policy=RETRY_UNTIL_PERMANENT,
    )


async def wallet_child(wallet_id: str, summary: str) -> None:
    try:
        await workflow.execute_child_workflow(
            WalletCreationWorkflow.run,
            WalletCreationInput(wallet_id=wallet_id),
            id=f"wallet-{wallet_id}",
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            static_summary=summary,
        )
    except WorkflowAlreadyStartedError:
        await wait_elsewhere(PoolActivities.wait_wallet, wallet_id)


async def withdrawal_child(chain: str, withdrawal_id: str, owner: str, summary: str, *, asset: str | None = None, wait: bool = True) -> None:
    """Run the transfer; `wait=False`: start it and go on (e.g. it waits for an operator)."""
    attributes = [
        SearchAttributePair(search_attributes.CHAIN, chain),
        SearchAttributePair(search_attributes.OWNER, owner),
        SearchAttributePair(search_attributes.STATUS, WithdrawalStatus.PENDING.value),
    ]
    if asset is not None:
        attributes.insert(1, SearchAttributePair(search_attributes.ASSET, asset))
    try:
        handle = await workflow.start_child_workflow(
            WithdrawalWorkflow.run,
            WithdrawalInput(withdrawal_id=withdrawal_id, chain=chain),
            id=f"withdrawal-{withdrawal_id}",
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=TypedSearchAttributes(attributes),
            static_summary=summary,
        )
    except WorkflowAlreadyStartedError:
        # Started by an earlier (crashed or overlapping) run: the same row, the same transfer.
        if wait:
            await wait_elsewhere(PoolActivities.wait_withdrawal, withdrawal_id)
        return
    if wait:
        await handle
