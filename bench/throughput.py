"""Throughput benchmark: custody's withdrawals/s per chain against the chain's and Temporal's ceilings.

    python -m bench [--targets evm,evm-token,solana,stellar] [--levels 1,8,32,128,512] [--per-level 2]
                    [--senders 8] [--out .data/bench]
    custody bench ...   (the same)

Starts the stack as `./dev up` does (bench/stack.py: free ports, temporary directory, anvil
auto-mining, i.e. instant blocks; the Solana and Stellar devnets when measured), then measures in
one run on one machine, for each target (EVM native, EVM token, Solana, Stellar; bench/targets.py):

- ceiling: the chain's own client signs, sends and confirms the same transfer on the same node,
  no custody, no Temporal (transfers/s);
- custody: withdrawals through the API at each in-flight level (closed loop: a slot submits its
  next withdrawal when its last one is final), withdrawals/s, with latency p50/p95/p99 of API
  accepted (the POST), request → broadcast and request → COMPLETED;
- history events and billable actions of one finished withdrawal's workflow;

and once:

- baseline: a Temporal workflow of one no-op activity on the same server (workflows/s);
- CPU seconds per withdrawal per process (psutil, before/after each level);
- the API alone at a fixed POST rate (worker stopped).

Prints a table, writes results.json, results.md and results.png (matplotlib) into --out. Timings
live here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench.targets import KNOWN, Target, ceiling, target
from devnet.termination import stop_like_ctrl_c_on_termination

console = Console(stderr=True)

FINAL = ("COMPLETED", "FAILED", "CANCELLED")
# History events Temporal Cloud bills as one action each (docs.temporal.io/cloud/actions); the
# rest of its counting is in billable_actions. Heartbeats are not in the history: not counted.
BILLABLE_EVENTS = {
    "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED",
    "EVENT_TYPE_TIMER_STARTED",
    "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED",
    "EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED",
    "EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED",
    "EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED",
    "EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED",
    "EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED",
}


def billable_actions(events: Any) -> int:
    """Temporal Cloud's actions in a history (docs.temporal.io/cloud/actions): the events above,
    one per activity attempt (the started event carries the last attempt), one per search
    attribute upsert except TemporalChangeVersion's (the SDK's own, for `patched`, is exempt), and
    one per workflow task that ran local activities (its markers together). Patch markers are not
    actions."""
    from temporalio.api.enums.v1 import EventType

    actions = 0
    tasks_with_local_activities = set()
    for event in events:
        kind = EventType.Name(event.event_type)
        if kind in BILLABLE_EVENTS:
            actions += 1
        elif kind == "EVENT_TYPE_ACTIVITY_TASK_STARTED":
            actions += max(event.activity_task_started_event_attributes.attempt, 1)
        elif kind == "EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
            fields = set(event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
            actions += bool(fields - {"TemporalChangeVersion"})
        elif kind == "EVENT_TYPE_MARKER_RECORDED" and event.marker_recorded_event_attributes.marker_name == "core_local_activity":
            tasks_with_local_activities.add(event.marker_recorded_event_attributes.workflow_task_completed_event_id)
    return actions + len(tasks_with_local_activities)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float | None]:
    return {"p50": percentile(values, 0.50), "p95": percentile(values, 0.95), "p99": percentile(values, 0.99), "n": len(values)}


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_at_start": os.getloadavg(),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------- CPU accounting


CUSTODY_PROCESSES = ("worker", "api", "temporal", "postgres", "redis")


class CpuMeter:
    """CPU seconds (user + system) used by each named process and what it spawned (PostgreSQL's
    backends), read from /proc before and after a measured stretch. A child that exited is still
    counted: its parent reaped it, and the kernel adds its time to the parent's children_* times."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench": os.getpid()}

    @staticmethod
    def _seconds(process: psutil.Process, with_reaped_children: bool) -> float:
        times = process.cpu_times()
        total = times.user + times.system
        if with_reaped_children:
            total += times.children_user + times.children_system
        return total

    def _tree_seconds(self, pid: int) -> float:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0.0
        for process in processes:
            try:
                total += self._seconds(process, with_reaped_children=True)
            except psutil.NoSuchProcess:
                pass  # exited between the listing and the read: its parent's children_* has it next time
        return total

    def sample(self) -> dict[str, float]:
        samples: dict[str, float] = {}
        for name, pid in self.pids.items():
            role = name.partition("#")[0]  # "worker#2": the second worker process counts as "worker"
            if name == "bench":  # the load generator only, not the stack it started (its children)
                samples[role] = self._seconds(psutil.Process(pid), with_reaped_children=False)
            else:
                samples[role] = samples.get(role, 0.0) + self._tree_seconds(pid)
        return samples

    @staticmethod
    def per_item(before: dict[str, float], after: dict[str, float], items: int) -> dict[str, float]:
        per = {name: (after[name] - before[name]) / max(items, 1) for name in before}
        # custody's own processes: not the chain (anvil) nor the load generator (bench)
        per["total"] = sum(v for name, v in per.items() if name in CUSTODY_PROCESSES)
        return per


# --------------------------------------------------------------------------- the Temporal baseline


async def measure_baseline(temporal_address: str, in_flight: int, total: int, progress: Progress) -> dict[str, Any]:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench.baseline import NoopWorkflow, noop

    client = await Client.connect(temporal_address)
    queue = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    task = progress.add_task(f"baseline (no-op workflow, {in_flight} in flight)", total=total)
    with ThreadPoolExecutor(max_workers=4) as executor:
        async with Worker(client, task_queue=queue, workflows=[NoopWorkflow], activities=[noop], activity_executor=executor):
            remaining = iter(range(total))

            async def slot() -> None:
                for i in remaining:
                    await client.execute_workflow(NoopWorkflow.run, i, id=f"{queue}-{i}", task_queue=queue)
                    progress.advance(task)

            started = time.perf_counter()
            await asyncio.gather(*(slot() for _ in range(in_flight)))
            elapsed = time.perf_counter() - started
    return {"in_flight": in_flight, "workflows": total, "seconds": elapsed, "per_second": total / elapsed}


# --------------------------------------------------------------------------- custody end to end


class Custody:
    def __init__(self, api: httpx.AsyncClient, database_url: str) -> None:
        from db.engine import create_engine

        self.api = api
        self.engine = create_engine(database_url, pool_size=2)

    async def wallets(self, target: Target, count: int) -> list[str]:
        ids = []
        for n in range(count):
            response = await self.api.post("/v1/wallets", json={"chain": target.chain, "label": f"bench-{target.name}-{n}"})
            response.raise_for_status()
            wallet_id = response.json()["id"]
            for body in target.fund:
                (await self.api.post(f"/v1/wallets/{wallet_id}/fund", json=body)).raise_for_status()
            ids.append(wallet_id)
        return ids

    async def statuses(self, ids: list[str]) -> dict[str, str]:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, status FROM withdrawals WHERE id = ANY(:ids)"), {"ids": ids})
            return {row.id: row.status for row in rows}

    async def timestamps(self, ids: list[str]) -> dict[str, tuple[datetime | None, datetime | None]]:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT w.id, w.completed_at, (SELECT min(a.broadcast_at) FROM transfer_attempts a WHERE a.withdrawal_id = w.id) AS broadcast_at "
                    "FROM withdrawals w WHERE w.id = ANY(:ids)"
                ),
                {"ids": ids},
            )
            return {row.id: (row.broadcast_at, row.completed_at) for row in rows}

    async def run_level(self, target: Target, wallets: list[str], in_flight: int, total: int, progress: Progress) -> dict[str, Any]:
        """`in_flight` slots, each submitting a withdrawal and waiting until it is final, `total` in all."""
        task = progress.add_task(f"custody {target.label} withdrawals, {in_flight} in flight", total=total)
        requested: dict[str, float] = {}  # id -> wall clock at the request (the database's clock is this machine's)
        accepted_ms: list[float] = []
        outcome: dict[str, str] = {}
        waiting: dict[str, asyncio.Future[str]] = {}
        counter = iter(range(total))
        failures: list[str] = []

        async def watcher() -> None:
            while True:
                if waiting:
                    for withdrawal_id, status in (await self.statuses(list(waiting))).items():
                        if status in FINAL and withdrawal_id in waiting:
                            waiting.pop(withdrawal_id).set_result(status)
                await asyncio.sleep(0.05)

        async def slot() -> None:
            for i in counter:
                wall = time.time()
                t = time.perf_counter()
                body = {"wallet_id": wallets[i % len(wallets)], "to": target.destination(), "asset": target.asset, "amount": target.amount}
                response = await self._post_withdrawal(body, failures)
                accepted_ms.append((time.perf_counter() - t) * 1000)
                if response is None:
                    progress.advance(task)
                    continue
                if response.status_code >= 300:
                    failures.append(f"POST {response.status_code}: {response.text[:200]}")
                    progress.advance(task)
                    continue
                withdrawal_id = response.json()["id"]
                requested[withdrawal_id] = wall
                future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
                waiting[withdrawal_id] = future
                outcome[withdrawal_id] = await future
                progress.advance(task)

        watch = asyncio.create_task(watcher())
        started = time.perf_counter()
        try:
            await asyncio.gather(*(slot() for _ in range(in_flight)))
        finally:
            watch.cancel()
        elapsed = time.perf_counter() - started
        stamps = await self.timestamps(list(requested))
        to_broadcast = [(b.timestamp() - requested[i]) * 1000 for i, (b, _c) in stamps.items() if b is not None]
        to_completed = [(c.timestamp() - requested[i]) * 1000 for i, (_b, c) in stamps.items() if c is not None and outcome.get(i) == "COMPLETED"]
        completed = sum(1 for s in outcome.values() if s == "COMPLETED")
        failures += [f"{i} ended {s}" for i, s in outcome.items() if s != "COMPLETED"]
        return {
            "in_flight": in_flight,
            "withdrawals": total,
            "completed": completed,
            "failures": failures[:10],
            "seconds": elapsed,
            "per_second": completed / elapsed,
            "latency_ms": {"api_accepted": summary(accepted_ms), "to_broadcast": summary(to_broadcast), "to_completed": summary(to_completed)},
            "ids": list(requested),
        }

    async def _post_withdrawal(self, body: dict[str, str], failures: list[str], attempts: int = 3) -> httpx.Response | None:
        """POST as a custody client should: a connection lost before the answer is retried with the
        same Idempotency-Key (the first request may have been accepted: the key returns it)."""
        key = uuid.uuid4().hex
        for attempt in range(attempts):
            try:
                return await self.api.post("/v1/withdrawals", json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as e:
                if attempt == attempts - 1:
                    failures.append(f"POST: {e!r}")
                await asyncio.sleep(0.5)
        return None

    async def close(self) -> None:
        await self.engine.dispose()


async def measure_api(
    api_url: str, headers: dict[str, str], target: Target, wallets: list[str], rate: float, seconds: float, progress: Progress
) -> dict[str, Any]:
    """POST /v1/withdrawals alone at a fixed rate (open loop: request i is due at i / rate s,
    whether or not the earlier ones answered), the worker stopped so only the API and what it
    calls (PostgreSQL, Redis, Temporal's start) work. Latency counts from the time a request was
    due, so a server that falls behind shows it (no coordinated omission); the service time from
    the actual send is reported too. aiohttp with at most 64 connections: httpx spent more CPU per
    request than the API itself with thousands of requests waiting for its pool."""
    import aiohttp

    total = int(rate * seconds)
    task = progress.add_task(f"API alone: POST at {rate:.0f}/s for {seconds:.0f} s", total=total)
    from_due: list[float] = []
    service: list[float] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(64)

    async def one(session: aiohttp.ClientSession, i: int, due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        async with gate:
            t = time.perf_counter()
            try:
                async with session.post(
                    f"{api_url}/v1/withdrawals",
                    json={"wallet_id": wallets[i % len(wallets)], "to": target.destination(), "asset": target.asset, "amount": target.amount},
                    headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                ) as response:
                    body = await response.read()
                    if response.status >= 300:
                        errors.append(f"{response.status}: {body[:120]!r}")
            except aiohttp.ClientError as e:
                errors.append(repr(e))
            done = time.perf_counter()
        service.append((done - t) * 1000)
        from_due.append((done - due) * 1000)
        progress.advance(task)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64), timeout=aiohttp.ClientTimeout(total=300)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one(session, i, started + i / rate) for i in range(total)))
        elapsed = time.perf_counter() - started
    return {
        "target_rate": rate,
        "seconds": elapsed,
        "requests": total,
        "achieved_rate": total / elapsed,
        "errors": len(errors),
        "first_errors": errors[:5],
        "latency_ms": summary(from_due),
        "service_ms": summary(service),
    }


async def workflow_cost(temporal_address: str, workflow_id: str) -> dict[str, Any]:
    """History events and billable actions (Temporal Cloud's counting) of one finished workflow."""
    from temporalio.client import Client

    client = await Client.connect(temporal_address)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    from temporalio.api.enums.v1 import EventType

    kinds = [EventType.Name(event.event_type) for event in history.events]
    activities = sum(1 for k in kinds if k == "EVENT_TYPE_ACTIVITY_TASK_SCHEDULED")
    return {
        "workflow_id": workflow_id,
        "history_events": len(kinds),
        "billable_actions": billable_actions(history.events),
        "activities": activities,
        "workflow_tasks": sum(1 for k in kinds if k == "EVENT_TYPE_WORKFLOW_TASK_COMPLETED"),
        "by_type": {k: kinds.count(k) for k in sorted(set(kinds))},
    }


# --------------------------------------------------------------------------- run


async def measure(stack: Any, args: argparse.Namespace) -> dict[str, Any]:
    meter = CpuMeter(stack.pids)
    result: dict[str, Any] = {"targets": []}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        async with httpx.AsyncClient(base_url=stack.api_url, headers=stack.api_headers, timeout=120) as api:
            custody = Custody(api, stack.database_url)
            try:
                wallets: dict[str, list[str]] = {}
                for name in args.targets:
                    measured_target = target(name)
                    one: dict[str, Any] = {"name": name, "chain": measured_target.chain, "asset": measured_target.asset, "levels": []}
                    one["ceiling"] = await ceiling(measured_target, stack.endpoints, args.ceiling_senders, args.ceiling_per_sender, progress)
                    wallets[name] = await custody.wallets(measured_target, args.senders)
                    for level in args.levels:
                        total = max(args.min_per_level, args.per_level * level)
                        before = meter.sample()
                        measured = await custody.run_level(measured_target, wallets[name], level, total, progress)
                        measured["cpu_seconds_per_withdrawal"] = CpuMeter.per_item(before, meter.sample(), measured["completed"])
                        one["levels"].append(measured)
                    finished = next((i for level in one["levels"] for i in level["ids"]), None)
                    one["history"] = await workflow_cost(stack.temporal_address, f"withdrawal-{finished}") if finished else None
                    result["targets"].append(one)
                top = max(args.levels)
                before = meter.sample()
                baseline = await measure_baseline(stack.temporal_address, top, max(args.min_per_level, args.per_level * top), progress)
                baseline["cpu_seconds_per_workflow"] = CpuMeter.per_item(before, meter.sample(), baseline["workflows"])
                result["baseline"] = baseline
                # Last: the withdrawals it accepts are never run (the worker is stopped).
                if args.api_rate > 0:
                    first = args.targets[0]
                    await asyncio.to_thread(stack.stop_workers)
                    before = meter.sample()
                    api_alone = await measure_api(
                        stack.api_url, stack.api_headers, target(first), wallets[first], args.api_rate, args.api_seconds, progress
                    )
                    api_alone["cpu_seconds_per_request"] = CpuMeter.per_item(before, meter.sample(), api_alone["requests"])
                    result["api_alone"] = api_alone
            finally:
                await custody.close()
    for one in result["targets"]:
        for level in one["levels"]:
            level["ratio_to_ceiling"] = level["per_second"] / one["ceiling"]["per_second"]
            level["ratio_to_baseline"] = level["per_second"] / baseline["per_second"]
            level.pop("ids")
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:,.0f}" if value >= 100 else f"{value:.1f}")


def table(result: dict[str, Any]) -> Table:
    t = Table(title="custody throughput (instant blocks on anvil; the devnets' own slot and ledger times)")
    for column in (
        "target",
        "in flight",
        "withdrawals/s",
        "% ceiling",
        "x baseline",
        "POST p50/p99 ms",
        "→broadcast p50/p95/p99 ms",
        "→COMPLETED p50/p95/p99 ms",
        "CPU ms/withdrawal (worker/API/temporal/pg/total)",
    ):
        t.add_column(column, justify="right")
    for one in result["targets"]:
        for level in one["levels"]:
            lat = level["latency_ms"]
            cpu = level["cpu_seconds_per_withdrawal"]
            t.add_row(
                f"{one['chain']} {one['asset']}",
                str(level["in_flight"]),
                f"{level['per_second']:.2f}",
                f"{100 * level['ratio_to_ceiling']:.1f} %",
                f"{level['ratio_to_baseline']:.3f}",
                f"{_ms(lat['api_accepted']['p50'])}/{_ms(lat['api_accepted']['p99'])}",
                "/".join(_ms(lat["to_broadcast"][q]) for q in ("p50", "p95", "p99")),
                "/".join(_ms(lat["to_completed"][q]) for q in ("p50", "p95", "p99")),
                "/".join(f"{1000 * cpu[k]:.0f}" for k in ("worker", "api", "temporal", "postgres", "total")),
            )
    t.caption = " · ".join(_notes(result))
    return t


def _notes(result: dict[str, Any]) -> list[str]:
    b = result["baseline"]
    notes = [
        f"{one['chain']} {one['asset']}: ceiling (plain client, {one['ceiling']['senders']} senders, same node) "
        f"{one['ceiling']['per_second']:.1f} transfers/s; one withdrawal {h.get('history_events', '-')} history events, "
        f"{h.get('billable_actions', '-')} billable actions, {h.get('activities', '-')} activities"
        for one in result["targets"]
        for h in [one["history"] or {}]
    ]
    notes.append(
        f"Temporal baseline (one no-op activity, {b['in_flight']} in flight, same server): {b['per_second']:.1f} workflows/s, "
        f"{1000 * b['cpu_seconds_per_workflow']['total']:.0f} ms CPU each"
    )
    if a := result.get("api_alone"):
        notes.append(
            f"API alone (worker stopped): POST /v1/withdrawals at {a['achieved_rate']:.0f}/s (asked {a['target_rate']:.0f}/s) "
            f"for {a['seconds']:.0f} s: p50 {_ms(a['latency_ms']['p50'])} ms, p99 {_ms(a['latency_ms']['p99'])} ms, {a['errors']} errors, "
            f"{1000 * a['cpu_seconds_per_request']['api']:.1f} ms API CPU per request"
        )
    return notes


def markdown(result: dict[str, Any]) -> str:
    """The table as Markdown, for README."""
    lines = [
        "| target | in flight | withdrawals/s | % of ceiling | x Temporal baseline | POST p50 / p99 ms | → broadcast p50 / p95 / p99 ms "
        "| → COMPLETED p50 / p95 / p99 ms | CPU ms per withdrawal: worker / API / Temporal / PostgreSQL / total |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for one in result["targets"]:
        for level in one["levels"]:
            lat, cpu = level["latency_ms"], level["cpu_seconds_per_withdrawal"]
            lines.append(
                f"| {one['chain']} {one['asset']} | {level['in_flight']} | {level['per_second']:.2f} | {100 * level['ratio_to_ceiling']:.1f} % "
                f"| {level['ratio_to_baseline']:.2f} "
                f"| {_ms(lat['api_accepted']['p50'])} / {_ms(lat['api_accepted']['p99'])} "
                f"| {' / '.join(_ms(lat['to_broadcast'][q]) for q in ('p50', 'p95', 'p99'))} "
                f"| {' / '.join(_ms(lat['to_completed'][q]) for q in ('p50', 'p95', 'p99'))} "
                f"| {' / '.join(f'{1000 * cpu[k]:.0f}' for k in ('worker', 'api', 'temporal', 'postgres', 'total'))} |"
            )
    m = result["run"]["machine"]
    lines += ["", *(f"- {note}." for note in _notes(result))]
    lines.append(
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gb']} GB RAM, load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}."
    )
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        console.print("matplotlib is not installed: no chart")
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for one in result["targets"]:
        label = f"{one['chain']} {one['asset']}"
        levels = [level["in_flight"] for level in one["levels"]]
        (line,) = left.plot(levels, [level["per_second"] for level in one["levels"]], "o-", label=f"{label} withdrawals/s")
        left.axhline(one["ceiling"]["per_second"], color=line.get_color(), linestyle=":", label=f"{label} raw client transfers/s")
        right.plot(
            levels,
            [level["latency_ms"]["to_completed"]["p50"] or 0 for level in one["levels"]],
            "o-",
            color=line.get_color(),
            label=f"{label} → COMPLETED p50",
        )
        right.plot(
            levels,
            [level["latency_ms"]["to_completed"]["p99"] or 0 for level in one["levels"]],
            "x--",
            color=line.get_color(),
            label=f"{label} → COMPLETED p99",
        )
    left.axhline(result["baseline"]["per_second"], color="gray", linestyle="--", label="Temporal no-op workflows/s")
    for axis, ylabel in ((left, "per second"), (right, "ms")):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("in flight")
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="evm,evm-token,solana,stellar", help=f"what to measure, comma separated: {', '.join(KNOWN)}")
    parser.add_argument("--levels", default="1,8,32,128", help="in-flight levels, comma separated (e.g. 1,8,32,128,512)")
    parser.add_argument("--per-level", type=int, default=2, help="withdrawals per level = this x the level (at least --min-per-level)")
    parser.add_argument("--min-per-level", type=int, default=10)
    parser.add_argument("--senders", type=int, default=8, help="wallets the withdrawals are spread over")
    parser.add_argument("--ceiling-senders", type=int, default=16)
    parser.add_argument("--ceiling-per-sender", type=int, default=25)
    parser.add_argument("--api-rate", type=float, default=200, help="POST /v1/withdrawals per second for the API-alone test (0: skip it)")
    parser.add_argument("--api-seconds", type=float, default=5)
    parser.add_argument("--block-time", type=float, default=None, help="anvil block time in s (default: instant blocks)")
    parser.add_argument("--solana-slot-ms", type=int, default=None, help="the Solana devnet's slot period (default: its own, 400 ms)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the task queue (./dev up --workers)")
    parser.add_argument("--no-sqlite-pragmas", action="store_true", help="start Temporal without WAL / synchronous=normal (to compare)")
    parser.add_argument("--out", type=Path, default=Path(".data/bench"), help="directory for results.json and results.png")
    args = parser.parse_args(argv)
    args.levels = [int(x) for x in str(args.levels).split(",") if x.strip()]
    if not args.levels or min(args.levels) < 1:
        parser.error("--levels needs positive integers")
    if args.workers < 1:
        parser.error("--workers needs at least 1")
    args.targets = [x.strip() for x in str(args.targets).split(",") if x.strip()]
    if not args.targets or any(name not in KNOWN for name in args.targets):
        parser.error(f"--targets takes {', '.join(KNOWN)}")
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    from bench import stack as bench_stack

    args = parse_args(argv)
    stop_like_ctrl_c_on_termination()
    started_at = datetime.now(UTC).isoformat()
    host = machine()
    chains = tuple(dict.fromkeys(KNOWN[name][0] for name in args.targets))
    console.print(f"starting the stack (PostgreSQL, Redis, {', '.join(chains)}, Temporal with SQLite file, {args.workers} worker process(es), API)…")
    stack = bench_stack.start(
        block_time=args.block_time,
        sqlite_pragmas=not args.no_sqlite_pragmas,
        chains=chains,
        solana_slot_ms=args.solana_slot_ms,
        workers=args.workers,
    )
    try:
        result = asyncio.run(measure(stack, args))
    except BaseException:
        kept = args.out / "failed-run-logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(stack.work / "logs", kept, dirs_exist_ok=True)
        console.print(f"the run failed: the stack's logs are in {kept}")
        raise
    finally:
        stack.stop()
    result["run"] = {
        "started_at": started_at,
        "machine": host,
        "targets": args.targets,
        "levels": args.levels,
        "senders": args.senders,
        "solana_slot_ms": args.solana_slot_ms,
        "block_time": args.block_time,
        "temporal_sqlite_pragmas": not args.no_sqlite_pragmas,
        "workers": args.workers,
        "note": "the machine may be shared with other processes during the run",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "results.md").write_text(markdown(result))
    charted = chart(result, args.out / "results.png")
    Console(width=max(Console().width, 160)).print(table(result))
    console.print(f"wrote {args.out / 'results.json'}" + (f" and {args.out / 'results.png'}" if charted else ""))
    return result


def main(argv: list[str] | None = None) -> None:
    result = run(argv)
    sys.exit(0 if all(level["completed"] == level["withdrawals"] for one in result["targets"] for level in one["levels"]) else 1)
