"""`custody chaos -n 200`: 200 withdrawals on anvil, Solana and Stellar through worker, API,
Temporal and PostgreSQL kills and restarts, wire faults on every node and anvil reorgs, on a
stack of the run's own (separate processes). Passes only if every withdrawal is final, paid
exactly once when COMPLETED and never otherwise, no EVM nonce gap is left, no hold is left, the
ledger reconciles with every chain and operators were told the truth; and only if the faults
really happened."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from devnet import local
from tests.support.processes import short_temporary_directory, terminate_once_running

WITHDRAWALS = 200
SEED = 1
# Typically everything is final well within a minute of the fault window; the deadline leaves
# room for a machine busy with the rest of the suite.
SETTLE_SECONDS = 240


@pytest.mark.timeout(600)
def test_chaos_run_of_200_withdrawals_on_three_chains_holds_every_promise(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The run's logs (worker, API, Temporal, proxies, devnets) kept under pytest's temporary
    # directory, so a failure in CI can be read afterwards; the report's work_dir names it.
    work_dir = tmp_path / "chaos"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "chaos",
            "-n",
            str(WITHDRAWALS),
            "--seed",
            str(SEED),
            "--settle",
            str(SETTLE_SECONDS),
            "--json",
            "--work-dir",
            str(work_dir),
        ],
        cwd=local.ROOT,
        capture_output=True,
        text=True,
        timeout=570,
    )
    assert run.stdout.strip(), f"no report (exit {run.returncode}):\n{run.stderr[-5000:]}"
    report = json.loads(run.stdout)
    violations = {k: v for k, v in report["violations"].items() if v}
    assert not violations, json.dumps(violations, indent=2)
    assert report["ok"] and run.returncode == 0, run.stderr[-5000:]

    workload = report["workload"]
    assert workload["withdrawals"] == workload["accepted"] == WITHDRAWALS
    planned = [w for w in report["withdrawals"]]
    assert {w["status"] for w in planned} <= {"COMPLETED", "FAILED", "CANCELLED"}
    assert sum(w["status"] == "COMPLETED" for w in planned) > WITHDRAWALS * 3 // 4
    assert all(w["status"] == "FAILED" and w["error_code"] == "INSUFFICIENT_FUNDS" for w in planned if w["oversized"] and w["cancel_after"] is None)
    assert workload["cancels"].get("ok", 0) >= 1 and workload["pauses"].get("ok", 0) >= 1
    assert {"anvil", "solana", "stellar"} <= set(report["final_states"])

    # The faults really happened, each kind, and every node's wire really failed.
    faults = report["faults"]
    assert faults["failed_to_inject"] == []
    for kind in ("worker_kills", "api_kills", "temporal_restarts", "postgres_restarts", "reorgs"):
        assert faults[kind] >= 1, kind
    for chain in ("anvil", "solana", "stellar"):
        injected = faults["wire_injected"][chain]
        assert injected.get("drop_response", 0) >= 1, (chain, injected, f"logs in {work_dir}/logs")  # accepted, answer lost
        assert len([a for a, n in injected.items() if n]) >= 3, (chain, injected)
    for action in ("error", "reset", "hang", "delay", "drop_response"):
        assert sum(faults["wire_injected"][c].get(action, 0) for c in faults["wire_injected"]) >= 1, action
    assert all(r.get("status") == "OK" for r in report["reconciliation"].values())


def test_a_terminated_chaos_run_stops_its_stack_and_removes_its_directory(request: pytest.FixtureRequest) -> None:
    """`timeout custody chaos ...` (SIGTERM) once its worker and API run: every process of its
    stack is stopped and its directory removed, as with Ctrl-C (Python's default for SIGTERM left
    them all running)."""
    temporary = short_temporary_directory(request.addfinalizer)
    chaos = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "chaos", "-n", "4", "--seed", "1"],
        cwd=local.ROOT,
        env={**os.environ, "TMPDIR": str(temporary)},  # the run's directory (tempfile.mkdtemp) is in here
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert terminate_once_running(chaos, temporary, "uvicorn", signal.SIGTERM) == []
    assert list(temporary.glob("custody-chaos-*")) == []
