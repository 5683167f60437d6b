"""The supervised processes of a local stack, one builder each: `./dev up` (devnet.stack) and the
benchmark (bench.stack) start the same services the same way and differ only in ports, data
directories and a few settings.

Each builder returns a devnet.supervisor.ChildProcess (not started): the caller decides when and
with which readiness timeout.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from devnet import local
from devnet.supervisor import ChildProcess
from models import search_attributes


def port_ready(port: int) -> Callable[[ChildProcess], bool]:
    return lambda _child: local.port_open(port)


def postgres(data_dir: Path, logs: Path) -> ChildProcess:
    """pgserver's PostgreSQL 16 on a unix socket in data_dir (initdb the first time)."""
    argv, user = local.postgres_foreground(data_dir)
    return ChildProcess(
        "postgres",
        argv,
        logs,
        ready=lambda child: local.postgres_ready(data_dir.resolve(), child.pid),
        user=user,
        stop_signal=signal.SIGINT,  # "fast" shutdown: SIGTERM would wait for every client to leave
        stop_timeout=30,
    )


def postgres_url(data_dir: Path) -> str:
    return f"postgresql+asyncpg://postgres@/postgres?host={data_dir.resolve()}"


def redis(port: int, data_dir: Path, logs: Path) -> ChildProcess:
    return ChildProcess("redis", local.redis_argv(port, data_dir), logs, ready=port_ready(port))


def anvil(
    port: int,
    logs: Path,
    *,
    state_file: Path | None = None,
    block_time: float | None = None,
    state_interval: int | None = None,
) -> ChildProcess:
    # With blocks on a timer, one slot per epoch: anvil's `finalized` block then trails the head by
    # two blocks, so COMPLETED (final, by default) costs two block times, as finality does on a
    # real chain. Auto-mining (no block time) has no trailing `finalized` block at all.
    extra_args = ["--slots-in-an-epoch", "1"] if block_time else []
    argv = local.anvil_argv(port, state_file, block_time=block_time, state_interval=state_interval, extra_args=extra_args)
    return ChildProcess("anvil", argv, logs, ready=port_ready(port))


def chain_devnet(family: str, port: int, state_dir: Path, logs: Path, extra_args: list[str] | None = None) -> ChildProcess:
    """The project's Solana (LiteSVM) or Stellar (Horizon API) devnet: `python -m devnet.<family>`."""
    argv = [sys.executable, "-m", f"devnet.{family}", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--state-dir", str(state_dir), "--log-level", "warning", *(extra_args or [])]
    return ChildProcess(f"{family}-devnet", argv, logs, ready=port_ready(port), cwd=local.ROOT)


def temporal(
    port: int,
    ui_port: int,
    db_file: Path,
    logs: Path,
    *,
    sqlite_pragmas: tuple[str, ...] = (),
    ui_codec_endpoint: str | None = None,
) -> ChildProcess:
    """The Temporal dev server (SQLite file) with its Web UI and custody's search attributes."""
    kinds = {key.name: kind for key, kind in search_attributes.KINDS.items()}
    codec = {"ui_codec_endpoint": ui_codec_endpoint} if ui_codec_endpoint else {}
    argv = local.temporal_argv(port, ui_port, db_file, kinds, sqlite_pragmas=sqlite_pragmas, **codec)
    return ChildProcess("temporal", argv, logs, ready=lambda _child: local.port_open(port) and local.port_open(ui_port))


def custody_env(
    *,
    database_url: str,
    redis_port: int,
    temporal_port: int,
    worker_metrics_port: int,
    temporal_metrics_port: int,
    chains: Mapping[str, Any],
    **settings: str,
) -> dict[str, str]:
    """The worker's and the API's environment: this process's, plus custody's settings
    (CUSTODY_*; `settings` are extra ones, named without the prefix, e.g. TASK_QUEUE="bench")."""
    return {
        **os.environ,
        "CUSTODY_ENVIRONMENT": "development",
        "CUSTODY_DATABASE_URL": database_url,
        "CUSTODY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "CUSTODY_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "CUSTODY_WORKER_METRICS_PORT": str(worker_metrics_port),
        "CUSTODY_TEMPORAL_METRICS_PORT": str(temporal_metrics_port),
        "CUSTODY_CHAINS": json.dumps(chains),
        **{f"CUSTODY_{name}": value for name, value in settings.items()},
    }


def worker(env: dict[str, str], logs: Path, *, stop_timeout: float, number: int = 1) -> ChildProcess:
    """`python worker.py`; ready once its metrics port answers (it serves it after connecting).
    Several on one task queue share the work: each with its own environment (`nth_worker_env`),
    the second and on named (and logging as) worker-2, worker-3, ..."""
    metrics_port = int(env["CUSTODY_WORKER_METRICS_PORT"])
    name = "worker" if number == 1 else f"worker-{number}"
    return ChildProcess(name, [sys.executable, "worker.py"], logs, ready=port_ready(metrics_port), env=env, cwd=local.ROOT, stop_timeout=stop_timeout)


def nth_worker_env(env: dict[str, str], worker_metrics_port: int, temporal_metrics_port: int) -> dict[str, str]:
    """`env` for one more worker process: each serves custody's metrics and the Temporal SDK's on
    ports of its own (two on one port: the second cannot start)."""
    return {**env, "CUSTODY_WORKER_METRICS_PORT": str(worker_metrics_port), "CUSTODY_TEMPORAL_METRICS_PORT": str(temporal_metrics_port)}


def api(port: int, env: dict[str, str], logs: Path, *, log_level: str | None = None) -> ChildProcess:
    """The FastAPI app under uvicorn, built from the environment (api.main:app_from_env)."""
    argv = [sys.executable, "-m", "uvicorn", "api.main:app_from_env", "--factory", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    argv += ["--log-level", log_level] if log_level else []
    return ChildProcess("api", argv, logs, ready=port_ready(port), env=env, cwd=local.ROOT)
