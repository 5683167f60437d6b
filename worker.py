"""The Temporal worker: wiring only. `python worker.py` (or `custody worker`)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.worker import Worker

import core.importlock  # noqa: F401  (Python 3.11: the sandbox's imports must survive re-entrant imports)
import workflows
from activities.alerts import record_withdrawal_alert
from activities.channels import ChannelActivities, channel_settings
from activities.errors import CustodyWorkerInterceptor
from activities.faucet import FaucetActivities
from activities.policy import PolicyActivities, PolicyJudge, PolicySettings
from activities.pools import PoolActivities
from activities.reconciliation import ReconciliationActivities
from activities.wallets import WalletActivities
from activities.webhooks import WebhookActivities
from activities.withdrawals import WithdrawalActivities, WithdrawalPolicy
from chains.registry import ChainRegistry
from core.logs import configure_logging
from core.redaction import register_settings
from core.sandbox_bytecode import cache_workflow_bytecode
from core.settings import Settings
from core.temporal import connect_temporal, metrics_runtime, worker_client
from core.tracing import configure_tracing, tracing_interceptors
from db.engine import WORKER_PING_IDLE_AFTER_SECONDS, SessionFactory, create_engine, create_session_factory
from db.gauges import sample_forever
from db.migrate import upgrade
from models.payloads import RebalanceInput, ReconciliationInput, WebhookDispatcherInput
from signers.kek import kek_from_settings
from signers.registry import SignerSet
from signers.secret_box import SecretBox
from workflows.channels import ChannelAccountsWorkflow
from workflows.faucet import FaucetWorkflow
from workflows.rebalance import RebalanceWorkflow
from workflows.reconciliation import ReconciliationWorkflow
from workflows.wallet_creation import WalletCreationWorkflow
from workflows.webhook_delivery import WebhookDeliveryWorkflow
from workflows.webhook_dispatcher import WebhookDispatcherWorkflow
from workflows.withdrawal import WithdrawalWorkflow

log = logging.getLogger("custody.worker")

WORKFLOWS: Sequence[type] = (
    WithdrawalWorkflow,
    WalletCreationWorkflow,
    FaucetWorkflow,
    RebalanceWorkflow,
    ChannelAccountsWorkflow,
    ReconciliationWorkflow,
    WebhookDispatcherWorkflow,
    WebhookDeliveryWorkflow,
)


def withdrawal_policy(settings: Settings) -> WithdrawalPolicy:
    rules = PolicySettings.from_settings(settings)
    return WithdrawalPolicy(
        rules.approval_thresholds,
        settings.approval_timeout_seconds,
        rules.hodl_auto_approve,
        settings.confirmation_rounds_per_run,
        settings.intent_seal_key_bytes,
        approval_threshold_window_seconds=settings.approval_threshold_window_seconds,
    )


def build_activities(settings: Settings, sessions: SessionFactory) -> list[Any]:
    chains = ChainRegistry.from_settings(settings)
    signers = SignerSet(settings, sessions)
    policy = withdrawal_policy(settings)
    judge = PolicyJudge(sessions, chains, policy.policy_settings())
    withdrawals = WithdrawalActivities(sessions, chains, signers, policy, judge=judge)
    wallets = WalletActivities(sessions, chains, signers)
    pools = PoolActivities(sessions, chains, signers, settings)
    channels = ChannelActivities(sessions, chains, settings)
    reconciliation = ReconciliationActivities(sessions, chains, settings.reconciliation)
    webhooks = WebhookActivities(sessions, settings, SecretBox(kek_from_settings(settings)))
    return [
        withdrawals.record_status,
        withdrawals.record_control,
        withdrawals.cancel_by_replacement,
        withdrawals.validate,
        withdrawals.validate_and_decide,
        withdrawals.reserve,
        withdrawals.prepare,
        withdrawals.bump,
        withdrawals.resign_expired,
        withdrawals.broadcast,
        withdrawals.sign_and_broadcast,
        withdrawals.await_confirmation,
        withdrawals.finish,
        withdrawals.record_alert,
        withdrawals.fill_sequence_gaps,
        PolicyActivities(judge).decide,
        wallets.create_key,
        wallets.activate,
        wallets.mark_failed,
        FaucetActivities(chains).transfer,
        FaucetActivities(chains).fund,
        pools.begin,
        pools.create_key,
        pools.activate_key,
        pools.wait_wallet,
        pools.wait_withdrawal,
        pools.plan_recovery,
        pools.finish_recovery,
        pools.plan_bank_topups,
        pools.finish_bank_topups,
        pools.plan_explorers,
        pools.plan_explorer_funding,
        pools.finish_explorer_funding,
        pools.complete,
        pools.lease,
        pools.lease_spend,
        pools.return_lease,
        channels.plan_wallets,
        channels.plan_funding,
        channels.fund_from_faucet,
        channels.finish,
        reconciliation.discover,
        reconciliation.verify_completed,
        reconciliation.report,
        webhooks.claim,
        webhooks.start,
        webhooks.begin,
        webhooks.attempt,
        webhooks.give_up,
    ]


def build_worker(client: Client, settings: Settings, sessions: SessionFactory, task_queue: str | None = None) -> Worker:
    register_settings(settings)  # endpoint keys and secrets masked in errors and logs
    cache_workflow_bytecode(Path(workflows.__file__).parent)  # the sandbox imports them per run
    return Worker(
        worker_client(client, settings),  # refuses payloads not sealed with the payload keys
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(settings, sessions),
        interceptors=[
            CustodyWorkerInterceptor(
                settings.chaos_exit_after_activity,
                alert_after_attempts=settings.unexpected_error_alert_after_attempts,
                on_stuck=_stuck_alert(sessions),
            ),
            *tracing_interceptors(settings),  # OpenTelemetry spans per workflow and activity, if on
        ],
        max_concurrent_activities=100,
        max_task_queue_activities_per_second=settings.activities_per_second or None,
        # On SIGTERM, activities in flight get this long to finish (a signature persisted, a
        # send answered) before they are cancelled and retried elsewhere.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_grace_seconds),
    )


def _stuck_alert(sessions: SessionFactory):  # type: ignore[no-untyped-def]
    """An activity of a withdrawal stuck on an unexpected error: alert on that withdrawal."""

    async def alert(workflow_id: str, activity_name: str, message: str) -> None:
        if workflow_id.startswith("withdrawal-"):
            await record_withdrawal_alert(sessions, workflow_id.removeprefix("withdrawal-"), "ACTIVITY_STUCK", message)

    return alert


def interval_schedule(run: Any, arg: Any, workflow_id: str, task_queue: str, every_seconds: int) -> Schedule:
    """One run every `every_seconds` (ids `<workflow_id>-<scheduled time>`); a run still going
    when the next is due makes that one skip (overlap SKIP). `_ensure_schedule` keeps these."""
    return Schedule(
        action=ScheduleActionStartWorkflow(run, arg, id=workflow_id, task_queue=task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


def rebalance_schedule(settings: Settings, chain: str) -> Schedule:
    """Every `rebalance_interval_seconds`, one RebalanceWorkflow of the chain's pool."""
    every = settings.pools[chain].rebalance_interval_seconds
    chain = chain.lower()
    return interval_schedule(RebalanceWorkflow.run, RebalanceInput(chain=chain), f"rebalance-{chain}", settings.task_queue, every)


async def _ensure_schedule(client: Client, schedule_id: str, schedule: Schedule, *, run_now: bool = False) -> None:
    """Create the schedule, idempotently: a worker starting after another (or twice) finds it
    and only brings its interval and task queue in line with the settings."""
    try:
        await client.create_schedule(schedule_id, schedule, trigger_immediately=run_now)
        log.info("schedule created", extra={"schedule_id": schedule_id})
        return
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)
    current = (await handle.describe()).schedule
    action, wanted = current.action, schedule.action
    assert isinstance(wanted, ScheduleActionStartWorkflow)
    if (
        [i.every for i in current.spec.intervals] != [i.every for i in schedule.spec.intervals]
        or current.policy.overlap != ScheduleOverlapPolicy.SKIP
        or not isinstance(action, ScheduleActionStartWorkflow)
        or action.task_queue != wanted.task_queue
    ):
        await handle.update(lambda _: ScheduleUpdate(schedule=schedule))
        log.info("schedule updated", extra={"schedule_id": schedule_id})
    if run_now:
        await handle.trigger()


async def ensure_rebalance_schedules(client: Client, settings: Settings) -> list[str]:
    """The schedule `rebalance-<chain>` of every configured pool."""
    ids = []
    for chain in sorted(settings.pools):
        if chain.lower() not in settings.chains:
            log.warning("pool configured for unknown chain %s: no schedule", chain)
            continue
        schedule_id = f"rebalance-{chain.lower()}"
        await _ensure_schedule(client, schedule_id, rebalance_schedule(settings, chain))
        ids.append(schedule_id)
    return ids


async def ensure_channel_schedules(client: Client, settings: Settings) -> list[str]:
    """The schedule `channels-<chain>` of every chain with channel accounts, run once at once so
    a new or resized channel set is ready without waiting an interval."""
    chains = ChainRegistry.from_settings(settings)
    ids = []
    for chain in chains.names():
        channels = channel_settings(chains, chain)
        if channels is None:
            continue
        schedule_id = f"channels-{chain}"
        await _ensure_schedule(
            client,
            schedule_id,
            interval_schedule(ChannelAccountsWorkflow.run, chain, schedule_id, settings.task_queue, channels.check_interval_seconds),
            run_now=True,
        )
        ids.append(schedule_id)
    return ids


async def ensure_reconciliation_schedules(client: Client, settings: Settings) -> list[str]:
    """The schedule `reconcile-<chain>` of every configured chain."""
    ids = []
    for chain in sorted(settings.chains):
        schedule_id = f"reconcile-{chain}"
        await _ensure_schedule(
            client,
            schedule_id,
            interval_schedule(
                ReconciliationWorkflow.run,
                ReconciliationInput(chain=chain),
                schedule_id,
                settings.task_queue,
                settings.reconciliation.interval_seconds,
            ),
        )
        ids.append(schedule_id)
    return ids


def webhook_dispatcher_id(settings: Settings) -> str:
    return f"webhook-dispatcher-{settings.task_queue}"


async def ensure_webhook_dispatcher(client: Client, settings: Settings, rounds_per_run: int = 100) -> str:
    """Start the dispatcher of this task queue, or join the one already running (one per queue:
    several workers share it; a new worker after a crash finds it)."""
    workflow_id = webhook_dispatcher_id(settings)
    await client.start_workflow(
        WebhookDispatcherWorkflow.run,
        WebhookDispatcherInput(rounds_per_run=rounds_per_run),
        id=workflow_id,
        task_queue=settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    return workflow_id


async def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    configure_tracing(settings, "custody-worker")
    engine = create_engine(settings.database_url, ping_idle_after=WORKER_PING_IDLE_AFTER_SECONDS)
    await upgrade(engine)
    sessions = create_session_factory(engine)
    runtime = metrics_runtime(settings.temporal_metrics_port) if settings.temporal_metrics_port else None
    client = await connect_temporal(settings, runtime)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")
    worker = build_worker(client, settings, sessions)
    await ensure_rebalance_schedules(client, settings)
    await ensure_channel_schedules(client, settings)
    await ensure_reconciliation_schedules(client, settings)
    if settings.webhooks.enabled:
        await ensure_webhook_dispatcher(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Said only once a SIGTERM would drain it (the handlers above), so a supervisor that stops
    # the worker as soon as it reports ready never kills it mid-activity.
    log.info("worker started", extra={"task_queue": settings.task_queue, "chains": sorted(settings.chains)})
    sampler = asyncio.create_task(sample_forever(sessions))
    try:
        async with worker:
            await stop.wait()
            # Leaving the block stops polling and drains activities in flight (graceful timeout).
            log.info("worker draining", extra={"grace_seconds": settings.worker_shutdown_grace_seconds})
    finally:
        sampler.cancel()
        await engine.dispose()
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
