"""One chaos run, start to verdict: the stack up, wallets made and funded, N withdrawals
submitted while the fault plan runs, faults off, everything given until the settle deadline to
become final, then the checks and the report. The stack is always taken down at the end."""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaos import checks, observe
from chaos.client import OPS, ChaosClient
from chaos.config import ChaosConfig
from chaos.faults import FaultExecutor, plan_faults
from chaos.report import fault_summary, machine
from chaos.stack import ChaosStack
from chaos.workload import Workload, plan

log = logging.getLogger("custody.chaos")
SUPERVISE_EVERY = 1.0
# A withdrawal still shown paused this long after the last operator action is resumed once
# more, and counted: its resume reached it before its pause (never seen so far).
LATE_RESUME_AFTER = 20.0
RECONCILE_TIMEOUT = 180.0


async def _supervise(stack: ChaosStack, stop: asyncio.Event) -> None:
    """Like a process supervisor: a part that died unasked is started again."""
    while not stop.is_set():
        try:
            restarted = await asyncio.to_thread(stack.supervise)
        except Exception as e:  # keep supervising; the next round tries again
            log.warning("chaos: restart failed: %s", e)
            restarted = []
        for name in restarted:
            log.warning("chaos: %s exited unasked and was started again", name)
        try:
            await asyncio.wait_for(stop.wait(), SUPERVISE_EVERY)
        except TimeoutError:
            pass


async def _open_count(database_url: str) -> int:
    import sqlalchemy as sa

    from db.engine import create_engine

    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(sa.text("SELECT count(*) FROM withdrawals WHERE status NOT IN ('COMPLETED', 'FAILED', 'CANCELLED')"))
            return int(result.scalar_one())
    finally:
        await engine.dispose()


async def _wait_all_final(stack: ChaosStack, workload: Workload, deadline: float) -> int:
    """Until nothing is open or the deadline; returns how many withdrawals were found still
    paused LATE_RESUME_AFTER seconds in (and resumed then)."""
    late_resumes, resume_at = 0, time.monotonic() + LATE_RESUME_AFTER
    while time.monotonic() < deadline:
        try:
            if await _open_count(stack.postgres.url) == 0:
                return late_resumes
        except Exception:  # the database restarting: ask again
            pass
        if resume_at is not None and time.monotonic() >= resume_at:
            late_resumes, resume_at = await workload.resume_left_paused(), None
        await asyncio.sleep(2)
    return late_resumes


async def _stellar_channels_ready(ops: ChaosClient, wanted: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = await ops.json("GET", "/v1/channels/stellar")
        if body["sizes"].get("READY", 0) >= wanted:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"Stellar channels not ready in {timeout:.0f} s: {body['sizes']}")


async def _reconcile(ops: ChaosClient, chain: str, timeout: float = RECONCILE_TIMEOUT) -> dict[str, Any]:
    """Run the chain's ReconciliationWorkflow now (as `custody reconcile` does) and its report."""
    deadline = time.monotonic() + timeout
    try:
        body = await ops.json("POST", f"/v1/admin/reconciliation/{chain}/runs", params={"wait_seconds": 30}, timeout=60)
        while body.get("report") is None and time.monotonic() < deadline:
            await asyncio.sleep(2)
            answer = await ops.request("GET", f"/v1/admin/reconciliation/{chain}", params={"run": body["workflow_id"]})
            if answer.status_code == 200:
                body = {"report": answer.json()}
        return body.get("report") or {"error": f"no report in {timeout:.0f} s: {body['workflow_id']}"}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


async def _setup(stack: ChaosStack, workload: Workload, config: ChaosConfig) -> None:
    kms_wallets = 0 if config.kms_share <= 0 else max(1, round(config.wallets_per_chain * config.kms_share))
    await workload.create_wallets(config.wallets_per_chain - kms_wallets, "local")
    if kms_wallets:
        # These wallets' keys are made in the AWS KMS devnet: custody restarted with it as the
        # backend for new wallets (a wallet keeps the backend it was made with; the Stellar
        # channels, made at the first start, stay in the local keystore).
        stack.signer_backend = "aws-kms"
        await asyncio.to_thread(stack.stop_custody)
        await asyncio.to_thread(stack.start_custody)
        await workload.create_wallets(kms_wallets, "kms")
    await workload.fund_wallets(stack.work_dir / "spl-mint-authority.json", stack.spl_mint, stack.node_url("solana"))


async def _observe(stack: ChaosStack, workload: Workload) -> dict[str, Any]:
    database = await observe.read_database(stack.postgres.url)
    by_chain: dict[str, dict[str, str]] = {"anvil": {}, "solana": {}, "stellar": {}}
    for p in workload.planned:
        by_chain[p.chain][p.destination] = p.asset
    senders = [w["address"] for w in workload.wallets["anvil"]]
    anvil, solana, stellar = await asyncio.gather(
        observe.read_anvil(stack.node_url("anvil"), stack.token_address, by_chain["anvil"], senders),
        observe.read_solana(stack.node_url("solana"), stack.spl_mint, by_chain["solana"]),
        observe.read_stellar(stack.node_url("stellar"), by_chain["stellar"]),
    )
    return {"database": database, "anvil": anvil, "balances": {**anvil["balances"], **solana, **stellar}, "senders": senders}


def _actions(workload: Workload, action: str) -> dict[str, int]:
    return dict(sorted(Counter(a.split(":", 2)[1].split(" ")[0] for p in workload.planned for a in p.actions if a.startswith(action + ":")).items()))


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round(usage.ru_utime + usage.ru_stime, 1)


async def run_chaos(config: ChaosConfig) -> dict[str, Any]:
    started = time.monotonic()
    work_dir = config.work_dir or Path(tempfile.mkdtemp(prefix="custody-chaos-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    stack = ChaosStack(work_dir, config.seed, kms=config.kms_share > 0)
    api, ops = ChaosClient(stack.api_url), ChaosClient(stack.api_url, OPS)
    stop_supervising = asyncio.Event()
    supervisor = None
    tasks: list[asyncio.Task[Any]] = []  # cancelled if the run stops early (Ctrl-C, an error)
    try:
        await asyncio.to_thread(stack.start)
        stack_started = time.monotonic()
        workload = Workload(api, ops, stack, config, random.Random(config.seed))
        await _setup(stack, workload, config)
        await _stellar_channels_ready(ops, 1)
        setup_done = time.monotonic()

        planned = plan(config, random.Random(f"{config.seed}-withdrawals"))
        events = plan_faults(config, random.Random(f"{config.seed}-faults"))
        executor = FaultExecutor(stack, events)
        supervisor = asyncio.create_task(_supervise(stack, stop_supervising))
        window_started = time.monotonic()
        window_end = window_started + config.fault_window_seconds
        settle_deadline = window_end + config.settle_seconds
        submissions = asyncio.create_task(workload.run(planned, window_started, settle_deadline))
        faults = asyncio.create_task(executor.run(window_started))
        tasks += [submissions, faults]
        await faults
        await asyncio.sleep(max(0.0, window_end - time.monotonic()))
        await executor.clear()
        window_closed = time.monotonic()
        await submissions
        late_resumes = await _wait_all_final(stack, workload, settle_deadline)
        all_final = time.monotonic()

        observed = await _observe(stack, workload)
        reports = dict(
            zip(
                ("anvil", "solana", "stellar"),
                await asyncio.gather(*(_reconcile(ops, chain) for chain in ("anvil", "solana", "stellar"))),
                strict=True,
            )
        )
        wire = await executor.counters()
        stop_supervising.set()
        await supervisor
        supervisor = None
        checked = time.monotonic()

        planned_dicts = [p.as_dict() for p in planned]
        verdict = checks.evaluate(planned_dicts, observed["database"], observed, reports)
        rows = {w["id"]: w for w in observed["database"]["withdrawals"]}
        services = {
            s.name: {"starts": s.starts, "kills": s.kills, "unplanned_exits": s.unplanned_exits, "cpu_seconds": round(s.cpu_seconds, 1)}
            for s in stack.all_services()
        }
        return {
            "ok": not any(verdict["violations"].values()),
            "config": config.as_dict(),
            "machine": machine(),
            "timings": {
                "stack_start": stack_started - started,
                "setup": setup_done - stack_started,
                "fault_window": window_closed - window_started,
                "all_final_after_window": all_final - window_closed,
                "checks": checked - all_final,
                "total": time.monotonic() - started,
                "harness_cpu": _own_cpu(),
                "postgres_cpu": stack.postgres.cpu_seconds(),
            },
            "workload": {
                "withdrawals": len(planned),
                "accepted": sum(p.withdrawal_id is not None for p in planned),
                "oversized": sum(p.oversized for p in planned),
                "cancels": _actions(workload, "cancel"),
                "pauses": _actions(workload, "pause"),
                "resumes": _actions(workload, "resume"),
                "late_resumes": late_resumes,
                "api_retries": api.retries + ops.retries,
                "api_answers_retried": {**api.server_errors, **{f"ops {k}": v for k, v in ops.server_errors.items()}},
                "wallets": {
                    c: [{"id": w["id"], "address": w["address"], "signer_backend": w["signer_backend"]} for w in ws]
                    for c, ws in workload.wallets.items()
                },
            },
            "faults": {
                **fault_summary([e.as_dict() for e in events], wire, services, stack.postgres.restarts),
                "plan": [e.as_dict() for e in events],
                "services": services,
                "restarts_left_to_supervisor": executor.slow_restarts,
            },
            **{k: verdict[k] for k in ("final_states", "transfers", "nonces", "holds")},
            "reconciliation": {
                c: ({"error": r["error"]} if "error" in r else {"status": r["status"], "rows": len(r["rows"]), "summary": r["summary"]})
                for c, r in reports.items()
            },
            "violations": verdict["violations"],
            "withdrawals": [
                {
                    **p.as_dict(),
                    "status": rows.get(p.withdrawal_id or "", {}).get("status"),
                    "error_code": rows.get(p.withdrawal_id or "", {}).get("error_code"),
                }
                for p in planned
            ],
            "work_dir": str(work_dir) if config.keep else None,
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        stop_supervising.set()
        if supervisor is not None:
            await supervisor
        await api.close()
        await ops.close()
        await asyncio.to_thread(stack.stop)
        if not config.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
