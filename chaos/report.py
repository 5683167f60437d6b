"""The chaos run's report: one JSON document (`--json`) and the table printed from it."""

from __future__ import annotations

import os
import platform
from collections import Counter
from typing import Any

CHECKS = (
    ("transfers", "on-chain transfers per withdrawal (1 if COMPLETED, else 0)"),
    ("nonces", "EVM nonces: no gap, nothing pending, every mined tx ours"),
    ("holds", "holds released or settled"),
    ("reconciliation", "ledger == chain (ReconciliationWorkflow)"),
    ("stuck", "nothing non-final after the settle deadline"),
    ("operator_view", "operators told the truth (paused flags, cancel answers)"),
)
STATUS_COLUMNS = ("COMPLETED", "FAILED", "CANCELLED")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages * size / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "memory": memory, "os": platform.platform(), "python": platform.python_version()}


def fault_summary(events: list[dict[str, Any]], wire: dict[str, Any], services: dict[str, Any], postgres_restarts: int) -> dict[str, Any]:
    kinds = Counter(e["kind"] for e in events if not e.get("error"))
    injected = {chain: dict(sorted(v["injected"].items())) for chain, v in wire.items() if chain != "kms"}
    return {
        "worker_kills": kinds["kill_worker"],
        "api_kills": kinds["kill_api"],
        "temporal_restarts": kinds["restart_temporal"],
        "postgres_restarts": postgres_restarts,
        "reorgs": kinds["reorg"],
        "kms_throttles": kinds["kms_throttle"],
        "wire_episodes": kinds["wire"],
        "wire_injected": injected,
        "kms_fired": wire.get("kms", {}).get("fired", {}),
        "failed_to_inject": [e for e in events if e.get("error")],
        "unplanned_exits": {name: s["unplanned_exits"] for name, s in services.items() if s["unplanned_exits"]},
    }


def render(report: dict[str, Any]) -> str:
    config, faults, lines = report["config"], report["faults"], []
    m = report["machine"]
    lines.append(
        f"custody chaos: {config['withdrawals']} withdrawals on anvil, solana, stellar; seed {config['seed']}; "
        f"faults for {config['fault_window_seconds']:.0f} s, settle within {config['settle_seconds']:.0f} s"
    )
    lines.append(f"machine: {m['cpus']} CPUs ({m['cpu']}), {m['memory']}, {m['os']}, Python {m['python']}")
    t = report["timings"]
    lines.append(
        f"time: stack {t['stack_start']:.0f} s, setup {t['setup']:.0f} s, all final {t['all_final_after_window']:.0f} s "
        f"after the fault window, checks {t['checks']:.0f} s, total {t['total']:.0f} s"
    )
    cpu = sorted(((s["cpu_seconds"], name) for name, s in faults["services"].items()), reverse=True)
    lines.append(
        "CPU seconds: "
        + ", ".join(f"{name} {seconds:.0f}" for seconds, name in cpu)
        + f", postgres {report['timings'].get('postgres_cpu', 0):.0f}, harness {report['timings'].get('harness_cpu', 0):.0f}"
    )
    lines.append("")
    wire = ", ".join(f"{chain} " + " ".join(f"{a} {n}" for a, n in counts.items()) for chain, counts in faults["wire_injected"].items())
    lines.append(
        f"faults: worker SIGKILLs {faults['worker_kills']}, API SIGKILLs {faults['api_kills']}, Temporal restarts "
        f"{faults['temporal_restarts']}, PostgreSQL restarts {faults['postgres_restarts']}, reorgs {faults['reorgs']}"
        + (f", KMS throttles {sum(faults['kms_fired'].values())}" if faults["kms_fired"] else "")
    )
    lines.append(f"wire faults injected ({faults['wire_episodes']} episodes): {wire}")
    if faults["failed_to_inject"]:
        lines.append(f"faults that could not be made: {len(faults['failed_to_inject'])}")
    if faults.get("restarts_left_to_supervisor"):
        lines.append(f"planned restarts that failed and were left to the supervisor: {len(faults['restarts_left_to_supervisor'])}")
    if faults["unplanned_exits"]:
        lines.append(f"processes that exited unasked (restarted): {faults['unplanned_exits']}")
    w = report["workload"]
    lines.append(
        f"operator actions: cancels {w['cancels']}, pauses {w['pauses']}, resumes {w['resumes']} "
        f"({w['late_resumes']} sent again after the window); API requests sent again {w['api_retries']}"
    )
    lines.append("")
    states = report["final_states"]
    others = sorted({s for counts in states.values() for s in counts} - set(STATUS_COLUMNS))
    columns = [*STATUS_COLUMNS, *others]
    width = max([len("final states"), *(len(c) for c in states)]) + 2
    lines.append("final states".ljust(width) + "".join(c.rjust(11) for c in columns) + "total".rjust(8))
    for chain, counts in states.items():
        lines.append(chain.ljust(width) + "".join(str(counts.get(c, 0)).rjust(11) for c in columns) + str(sum(counts.values())).rjust(8))
    lines.append("")
    lines.append("transfers on chain per withdrawal (status:transfers count): " + ", ".join(f"{k} {v}" for k, v in report["transfers"].items()))
    lines.append("")
    violations = report["violations"]
    for key, title in CHECKS:
        found = violations[key]
        lines.append(f"{title:<62} {'OK' if not found else f'FAILED ({len(found)})'}")
    lines.append(f"{'':<62} holds: {report['holds']}")
    recon = ", ".join(f"{c} {r.get('status', 'ERROR')}" for c, r in report["reconciliation"].items())
    lines.append(f"{'':<62} reconciliation: {recon}")
    for key, _ in CHECKS:
        for v in violations[key][:50]:
            lines.append(f"  {key}: {v}")
        if len(violations[key]) > 50:
            lines.append(f"  {key}: ... {len(violations[key]) - 50} more")
    lines.append("")
    lines.append("PASS" if report["ok"] else "FAIL")
    return "\n".join(lines)
