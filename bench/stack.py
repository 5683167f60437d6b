"""The stack the benchmark measures: `./dev up`'s processes, on free ports, in a temporary directory.

PostgreSQL (pgserver), Redis, anvil, the Temporal dev server with its SQLite file, then the worker(s)
and the API as separate processes, each owned by devnet.supervisor as `./dev up` does; the Solana
(LiteSVM) and Stellar devnets only when a target needs them. anvil carries the TUSD test token.
Everything is stopped and the directory removed on exit.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devnet import local, services
from devnet.stack import DEV_API_KEY, STELLAR_DEVNET_PASSPHRASE, TEMPORAL_SQLITE_PRAGMAS, _migrate
from devnet.supervisor import ChildProcess, Supervisor


@dataclass
class BenchStack:
    work: Path
    supervisor: Supervisor
    ports: dict[str, int]
    database_url: str
    chains: dict[str, dict]
    endpoints: dict[str, str]  # the nodes' URLs, for the ceilings: anvil, anvil_token, solana, stellar, ...
    # "worker#2" and on: the second worker process and on (bench.throughput adds them to "worker")
    pids: dict[str, int] = field(default_factory=dict)
    workers: list[ChildProcess] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports['temporal']}"

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['anvil']}"

    @property
    def api_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {DEV_API_KEY}"}

    def stop_workers(self) -> None:
        """Stop the workers alone (the API is then measured alone; nothing restarts them: the
        supervisor's watch loop does not run under the bench). Waits until they have exited."""
        for worker in self.workers:
            worker.kill()
        while any(worker.exit_code() is None for worker in self.workers):
            time.sleep(0.05)

    def stop(self) -> None:
        self.supervisor.stop_all()
        self.supervisor.close()
        shutil.rmtree(self.work, ignore_errors=True)


def start(
    *,
    block_time: float | None = None,
    sqlite_pragmas: bool = True,
    task_queue: str = "bench",
    poll_interval_seconds: float | None = None,
    chains: tuple[str, ...] = ("anvil",),
    solana_slot_ms: int | None = None,
    workers: int = 1,
) -> BenchStack:
    """Start every service in dependency order; on failure, stop what was started and raise."""
    work = Path(tempfile.mkdtemp(prefix="custody-bench-"))
    work.chmod(0o755)  # as root, PostgreSQL runs as pgserver's own user and must reach its data dir
    logs = work / "logs"
    ports = {
        name: local.free_port()
        for name in ("api", "temporal", "temporal_ui", "anvil", "solana", "stellar", "redis", "worker_metrics", "temporal_metrics")
    }
    # Each worker process serves its two metrics ports (custody's, the SDK's); the first, the environment's.
    metrics_ports = [(ports["worker_metrics"], ports["temporal_metrics"])]
    metrics_ports += [(local.free_port(), local.free_port()) for _ in range(workers - 1)]
    supervisor = Supervisor(say=lambda line: print(f"[bench] {line}", file=sys.stderr, flush=True))
    pgdata = work / "postgres"
    database_url = services.postgres_url(pgdata)
    chain = {
        "family": "evm",
        "chain_id": 31337,
        "rpc_url": f"http://127.0.0.1:{ports['anvil']}",
        "native_symbol": "ETH",
        "faucet_enabled": True,
        "fee_bump_after_seconds": 20,
        # Instant blocks: an auto-mining anvil has no `finalized` block trailing the head, so
        # COMPLETED is one block deep (the block hash re-checked), as on a chain with instant finality.
        **({} if block_time else {"finality": "depth", "confirmations": 1}),
        **({"poll_interval_seconds": poll_interval_seconds} if poll_interval_seconds else {}),
    }
    endpoints = {
        "anvil": chain["rpc_url"],
        "solana": f"http://127.0.0.1:{ports['solana']}",
        "stellar": f"http://127.0.0.1:{ports['stellar']}",
        "stellar_passphrase": STELLAR_DEVNET_PASSPHRASE,
    }
    stack = BenchStack(work, supervisor, ports, database_url, {"anvil": chain}, endpoints)
    try:
        stack.pids["postgres"] = supervisor.start(services.postgres(pgdata, logs)).pid  # type: ignore[attr-defined]
        stack.pids["redis"] = supervisor.start(services.redis(ports["redis"], work / "redis", logs)).pid  # type: ignore[attr-defined]
        stack.pids["anvil"] = supervisor.start(services.anvil(ports["anvil"], logs, block_time=block_time)).pid  # type: ignore[attr-defined]
        endpoints["anvil_token"] = asyncio.run(local.deploy_test_token(chain["rpc_url"], "Test USD", "TUSD", 6))
        chain["tokens"] = {"TUSD": {"address": endpoints["anvil_token"], "decimals": 6}}
        if "solana" in chains:
            slot = ["--ledger-slot-ms", str(solana_slot_ms)] if solana_slot_ms else []
            stack.pids["solana"] = supervisor.start(services.chain_devnet("solana", ports["solana"], work / "solana", logs, slot)).pid  # type: ignore[attr-defined]
            stack.chains["solana"] = {"family": "solana", "rpc_url": endpoints["solana"], "faucet_enabled": True}
        if "stellar" in chains:
            stack.pids["stellar"] = supervisor.start(services.chain_devnet("stellar", ports["stellar"], work / "stellar", logs)).pid  # type: ignore[attr-defined]
            stack.chains["stellar"] = {
                "family": "stellar",
                "horizon_url": endpoints["stellar"],
                "network_passphrase": STELLAR_DEVNET_PASSPHRASE,
                "faucet_enabled": True,
                "channels": {"count": 16},  # friendbot creates them at worker start; one transaction in flight each
            }
        pragmas = TEMPORAL_SQLITE_PRAGMAS if sqlite_pragmas else ()
        temporal = services.temporal(ports["temporal"], ports["temporal_ui"], work / "temporal.db", logs, sqlite_pragmas=pragmas)
        stack.pids["temporal"] = supervisor.start(temporal, ready_timeout=90).pid  # type: ignore[attr-defined]
        asyncio.run(_migrate(database_url))
        env = services.custody_env(
            database_url=database_url,
            redis_port=ports["redis"],
            temporal_port=ports["temporal"],
            worker_metrics_port=ports["worker_metrics"],
            temporal_metrics_port=ports["temporal_metrics"],
            chains=stack.chains,
            LOG_LEVEL="WARNING",
            TASK_QUEUE=task_queue,
            FAUCET_DAILY_LIMIT="100000",
            # One identity is the whole load here: the limiter still runs (its Redis round trips are
            # part of a request's cost) with buckets the benchmark does not empty.
            RATE_LIMITS__PER_IDENTITY="1000000/minute",
            RATE_LIMITS__PER_IP="1000000/minute",
            RATE_LIMITS__WALLET_CREATION="10000/hour",
        )
        for number, (worker_metrics, temporal_metrics) in enumerate(metrics_ports, start=1):
            worker_env = services.nth_worker_env(env, worker_metrics, temporal_metrics)
            # stop_timeout: the measurement is over, nothing to let finish
            worker: ChildProcess = supervisor.start(services.worker(worker_env, logs, stop_timeout=5, number=number))  # type: ignore[assignment]
            stack.workers.append(worker)
            stack.pids["worker" if number == 1 else f"worker#{number}"] = worker.pid  # type: ignore[assignment]
        stack.pids["api"] = supervisor.start(services.api(ports["api"], env, logs, log_level="warning")).pid  # type: ignore[attr-defined]
    except BaseException:
        stack.stop()
        raise
    return stack
