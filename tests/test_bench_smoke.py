"""`python -m bench` at a tiny size: it starts its own stack, finishes, and its JSON carries every
figure with a sane value. No timing is asserted (timings belong to the benchmark's own run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import short_temporary_directory, terminate_once_running

ROOT = Path(__file__).resolve().parent.parent


def _ordered(summary: dict) -> bool:
    return summary["n"] > 0 and 0 < summary["p50"] <= summary["p95"] <= summary["p99"]


def test_bench_runs_at_tiny_size_and_reports_every_figure(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--targets",
            "evm,evm-token,solana,stellar",
            "--solana-slot-ms",
            "100",  # finalized 3.2 s after the send instead of 12.8 s: the same path, a shorter wait
            "--levels",
            "1,2",
            "--min-per-level",
            "3",
            "--per-level",
            "1",
            "--senders",
            "2",
            "--ceiling-senders",
            "2",
            "--ceiling-per-sender",
            "3",
            "--api-rate",
            "10",
            "--api-seconds",
            "1",
            "--workers",
            "2",  # two worker processes on the task queue, their CPU counted as one "worker"
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "results.png").stat().st_size > 0
    assert "withdrawals/s" in run.stdout  # the table
    assert (tmp_path / "results.md").read_text().count("\n| ") == 8  # a Markdown row per target and level

    assert result["baseline"]["workflows"] == 3 and result["baseline"]["per_second"] > 0
    assert [(one["chain"], one["asset"]) for one in result["targets"]] == [("anvil", "ETH"), ("anvil", "TUSD"), ("solana", "SOL"), ("stellar", "XLM")]
    for one in result["targets"]:
        assert one["ceiling"]["transfers"] == 6 and one["ceiling"]["per_second"] > 0, one["name"]
        assert [level["in_flight"] for level in one["levels"]] == [1, 2]
        for level in one["levels"]:
            assert level["completed"] == level["withdrawals"] == 3, (one["name"], level["failures"])
            assert level["failures"] == []
            assert level["per_second"] > 0
            assert level["ratio_to_ceiling"] == pytest.approx(level["per_second"] / one["ceiling"]["per_second"])
            assert level["ratio_to_baseline"] == pytest.approx(level["per_second"] / result["baseline"]["per_second"])
            latency = level["latency_ms"]
            assert all(_ordered(latency[name]) for name in ("api_accepted", "to_broadcast", "to_completed"))
            assert latency["to_broadcast"]["n"] == latency["to_completed"]["n"] == 3
            # each withdrawal is broadcast before it completes; both after it was requested
            assert latency["to_broadcast"]["p50"] <= latency["to_completed"]["p99"]
            cpu = level["cpu_seconds_per_withdrawal"]
            assert {"worker", "api", "temporal", "postgres", "redis", "anvil", "bench", "total"} <= set(cpu)
            assert not any("#" in name for name in cpu)  # worker#2 is part of "worker"
            assert all(seconds >= 0 for seconds in cpu.values())
            assert cpu["worker"] > 0 and cpu["temporal"] > 0
            assert cpu["total"] == pytest.approx(sum(cpu[name] for name in ("worker", "api", "temporal", "postgres", "redis")))

        history = one["history"]
        assert history["workflow_id"].startswith("withdrawal-")
        assert history["by_type"]["EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"] == 1
        assert history["history_events"] == sum(history["by_type"].values())
        assert 0 < history["activities"] and 0 < history["billable_actions"] < history["history_events"]
    assert result["run"]["workers"] == 2
    machine = result["run"]["machine"]
    assert machine["nproc"] >= 1 and machine["ram_gb"] > 0 and machine["cpu_model"]
    api_alone = result["api_alone"]
    assert api_alone["requests"] == 10 and api_alone["errors"] == 0, api_alone["first_errors"]
    assert _ordered(api_alone["latency_ms"]) and api_alone["latency_ms"]["n"] == 10
    assert _ordered(api_alone["service_ms"]) and api_alone["service_ms"]["p50"] <= api_alone["latency_ms"]["p99"]
    assert api_alone["achieved_rate"] > 0 and api_alone["cpu_seconds_per_request"]["api"] > 0


@pytest.mark.parametrize(
    ("history", "actions"),
    [
        # start, 1 activity (signed, sent and seen final), 2 status upserts (SIGNING, COMPLETED),
        # local activities in 2 workflow tasks (validate + reserve, then finish)
        ("WithdrawalWorkflow__v9_completed", 6),
        # start, 2 activities, 3 status upserts (TemporalChangeVersion's is exempt), local
        # activities in 2 workflow tasks (validate + reserve, then finish); the patch marker is free
        ("WithdrawalWorkflow__v8_completed", 8),
        # start, 3 activities, 5 status upserts, local activities in 2 workflow tasks
        ("WithdrawalWorkflow__v7_completed", 11),
        # start, 6 activities, 5 status upserts, no local activity
        ("WithdrawalWorkflow__v6_completed", 12),
    ],
)
def test_billable_actions_follow_temporal_clouds_counting(history: str, actions: int) -> None:
    from temporalio.client import WorkflowHistory

    from bench.throughput import billable_actions

    path = Path(__file__).parent / "histories" / f"{history}.json"
    events = WorkflowHistory.from_json("withdrawal-x", path.read_text()).events
    assert billable_actions(events) == actions


@pytest.mark.parametrize(("signum", "after"), [(signal.SIGHUP, "postgres"), (signal.SIGTERM, "uvicorn")])
def test_a_terminated_bench_stops_its_stack_and_removes_its_directory(request: pytest.FixtureRequest, signum: int, after: str) -> None:
    """A closed terminal (SIGHUP) as the stack starts, `timeout` or `kill` (SIGTERM) once the
    worker and the API run: every process it started is stopped and its temporary directory
    removed, as with Ctrl-C. Before, PostgreSQL, Temporal, the devnets, the worker and the API
    ran on (the worker retrying a dead Temporal forever)."""
    temporary = short_temporary_directory(request.addfinalizer)
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--targets", "evm", "--levels", "1", "--out", str(temporary / "out")],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(temporary)},  # the stack's directory (tempfile.mkdtemp) is in here
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert terminate_once_running(bench, temporary, after, signum) == []
    assert list(temporary.glob("custody-bench-*")) == []
