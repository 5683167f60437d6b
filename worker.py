"""The Temporal worker: wiring only. `python worker.py` (or `custody worker`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from prometheus_client import start_http_server
from temporalio.client import Client
from temporalio.worker import Worker

from activities.errors import CustodyWorkerInterceptor
from activities.faucet import FaucetActivities
from activities.wallets import WalletActivities
from activities.withdrawals import WithdrawalActivities, WithdrawalPolicy
from core.money import to_base_units
from chains.registry import ChainRegistry
from core.logs import configure_logging
from core.settings import Settings
from core.temporal import connect_temporal
from db.engine import SessionFactory, create_engine, create_session_factory
from db.migrate import upgrade
from signers.registry import SignerSet
from workflows.faucet import FaucetWorkflow
from workflows.wallet_creation import WalletCreationWorkflow
from workflows.withdrawal import WithdrawalWorkflow

log = logging.getLogger("custody.worker")

WORKFLOWS: Sequence[type] = (WithdrawalWorkflow, WalletCreationWorkflow, FaucetWorkflow)


def withdrawal_policy(settings: Settings) -> WithdrawalPolicy:
    thresholds: dict[tuple[str, str], int] = {}
    for key, amount in settings.approval_thresholds.items():
        chain, _, asset = key.partition(":")
        decimals = settings.chain(chain).asset(asset).decimals
        thresholds[(chain.lower(), asset)] = to_base_units(amount, decimals)
    return WithdrawalPolicy(thresholds, settings.approval_timeout_seconds)


def build_activities(settings: Settings, sessions: SessionFactory) -> list[Any]:
    chains = ChainRegistry.from_settings(settings)
    signers = SignerSet(settings, sessions)
    withdrawals = WithdrawalActivities(sessions, chains, signers, withdrawal_policy(settings))
    wallets = WalletActivities(sessions, chains, signers.default)
    return [
        withdrawals.record_status,
        withdrawals.record_control,
        withdrawals.cancel_by_replacement,
        withdrawals.validate,
        withdrawals.reserve,
        withdrawals.prepare,
        withdrawals.bump,
        withdrawals.resign_expired,
        withdrawals.broadcast,
        withdrawals.await_confirmation,
        withdrawals.finish,
        wallets.create_key,
        wallets.activate,
        wallets.mark_failed,
        FaucetActivities(chains).transfer,
    ]


def build_worker(client: Client, settings: Settings, sessions: SessionFactory, task_queue: str | None = None) -> Worker:
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=build_activities(settings, sessions),
        interceptors=[CustodyWorkerInterceptor(settings.chaos_exit_after_activity)],
        max_concurrent_activities=100,
        max_task_queue_activities_per_second=settings.activities_per_second or None,
    )


async def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    engine = create_engine(settings.database_url)
    await upgrade(engine)
    sessions = create_session_factory(engine)
    client = await connect_temporal(settings)
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr="127.0.0.1")
    worker = build_worker(client, settings, sessions)
    log.info("worker started", extra={"task_queue": settings.task_queue, "chains": sorted(settings.chains)})
    try:
        await worker.run()
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
