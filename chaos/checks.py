"""The verdicts of a chaos run: pure functions over what was planned, what custody's database
says and what the chains say (chaos/observe.py). Each returns a list of violations (strings that
name the withdrawal or account); the run passes only when every list is empty."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

FINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def final_states(withdrawals: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts per status per chain (every withdrawal custody has, gap fills included)."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for w in withdrawals:
        kind = "" if w["kind"] == "TRANSFER" else f" {w['kind']}"
        table[w["chain"] + kind][w["status"]] += 1
    return {chain: dict(sorted(counts.items())) for chain, counts in sorted(table.items())}


def transfers_per_withdrawal(
    planned: list[dict[str, Any]], rows: dict[str, dict[str, Any]], balances: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """How many times each planned withdrawal's fresh destination was paid (its balance over the
    amount): exactly 1 for COMPLETED, 0 for FAILED and CANCELLED. Returns a histogram of
    (status, transfers) and the violations."""
    histogram: Counter[str] = Counter()
    violations = []
    for p in planned:
        if p["withdrawal_id"] is None:
            violations.append(f"#{p['index']} {p['chain']} {p['asset']}: never accepted by the API ({p['submit_error']})")
            continue
        row = rows.get(p["withdrawal_id"])
        if row is None:
            violations.append(f"{p['withdrawal_id']}: accepted but not in the database")
            continue
        received = balances.get(p["destination"], 0)
        transfers, rest = divmod(received, p["base_units"])
        histogram[f"{row['status']}:{transfers}" + ("+partial" if rest else "")] += 1
        where = f"{p['withdrawal_id']} ({p['chain']} {p['asset']} {p['amount']} -> {p['destination']})"
        if rest:
            violations.append(f"{where}: destination holds {received} base units, not a multiple of {p['base_units']}")
        expected = {"COMPLETED": 1, "FAILED": 0, "CANCELLED": 0}.get(row["status"])
        if expected is None:
            continue  # not final: reported as stuck
        if transfers != expected:
            violations.append(f"{where}: {row['status']} with {transfers} transfer(s) on chain, expected {expected}")
        if p["oversized"] and row["status"] == "COMPLETED":
            violations.append(f"{where}: more than the wallet holds, yet COMPLETED")
    return dict(sorted(histogram.items())), violations


def evm_nonces(
    senders: list[str], chain_view: dict[str, Any], claims: list[dict[str, Any]], attempts: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Per EVM sender: its on-chain nonce equals the number of its mined transactions, nothing is
    left pending, every mined transaction is an attempt of ours, each nonce holds one of them,
    and no claimed nonce is left unused below a later one (a gap that would jam the sender)."""
    ours = {a["tx_hash"].lower() for a in attempts}
    summary = {}
    violations = []
    for sender in senders:
        nonce = chain_view["nonces"][sender]
        mined = chain_view["mined"][sender]
        used = Counter(tx["nonce"] for tx in mined)
        mine = [c for c in claims if c["sender"].lower() == sender.lower()]
        released = sorted(c["sequence"] for c in mine if c["state"] == "RELEASED")
        active = sorted(c["sequence"] for c in mine if c["state"] != "RELEASED")
        summary[sender] = {"nonce": nonce["latest"], "mined": len(mined), "claims": len(mine), "released": len(released)}
        if nonce["latest"] != len(mined):
            violations.append(f"{sender}: on-chain nonce {nonce['latest']} but {len(mined)} mined transactions")
        if nonce["pending"] != nonce["latest"]:
            violations.append(f"{sender}: {nonce['pending'] - nonce['latest']} transaction(s) still pending at nonce {nonce['latest']}")
        for tx in mined:
            if tx["hash"].lower() not in ours:
                violations.append(f"{sender}: mined transaction {tx['hash']} (nonce {tx['nonce']}) is no attempt of custody's")
        for n, times in sorted(used.items()):
            if times > 1:
                violations.append(f"{sender}: nonce {n} mined {times} times")
        for n in active:
            if n >= nonce["latest"]:
                violations.append(f"{sender}: nonce {n} claimed by a withdrawal but never mined (chain nonce {nonce['latest']})")
        highest_claimed = max(active, default=-1)
        for n in released:
            if nonce["latest"] <= n < highest_claimed:
                violations.append(f"{sender}: released nonce {n} left unfilled below claimed nonce {highest_claimed}")
    return summary, violations


def holds(withdrawals: list[dict[str, Any]], reservations: list[dict[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """No HELD reservation on a final withdrawal: it is settled (paid) or released."""
    status = {w["id"]: w["status"] for w in withdrawals}
    counts: Counter[str] = Counter()
    violations = []
    for r in reservations:
        counts[r["state"]] += 1
        if r["state"] == "HELD" and status.get(r["withdrawal_id"]) in FINAL:
            violations.append(f"{r['withdrawal_id']}: {status[r['withdrawal_id']]} but its hold is still HELD")
    return dict(sorted(counts.items())), violations


def operator_view(planned: list[dict[str, Any]], rows: dict[str, dict[str, Any]]) -> list[str]:
    """What operators see is true: no final withdrawal still shown paused, and no cancellation
    refused as impossible ("not running") that then happened."""
    violations = [
        f"{w['id']} ({w['chain']} {w['kind']}): {w['status']} but still shown paused" for w in rows.values() if w["status"] in FINAL and w["paused"]
    ]
    for p in planned:
        row = rows.get(p["withdrawal_id"] or "")
        if row is None or row["status"] != "CANCELLED":
            continue
        refused = [a for a in p["actions"] if a.startswith("cancel:WORKFLOW_NOT_RUNNING")]
        if refused:
            violations.append(f"{p['withdrawal_id']}: CANCELLED, yet the cancel was answered {refused[0]!r}")
    return violations


def stuck(withdrawals: list[dict[str, Any]]) -> list[str]:
    """Nothing non-final once the settle deadline passed (gap fills and trustlines included)."""
    return [
        f"{w['id']} ({w['chain']} {w['kind']} {w['asset']}): still {w['status']}" + (" (paused)" if w["paused"] else "")
        for w in withdrawals
        if w["status"] not in FINAL
    ]


def reconciliation(reports: dict[str, dict[str, Any]]) -> list[str]:
    """Ledger == chain: every chain's report OK, no drift, nothing vanished, nothing unexplained."""
    violations = []
    for chain, report in sorted(reports.items()):
        if "error" in report:
            violations.append(f"{chain}: reconciliation did not run: {report['error']}")
            continue
        for row in report["rows"]:
            if row["status"] != "OK":
                violations.append(
                    f"{chain}: wallet {row['wallet_id']} {row['asset']}: {row['status']} on chain {row['on_chain']}, "
                    f"expected {row['expected']} (drift {row['drift']})"
                )
        for v in report["vanished"]:
            violations.append(f"{chain}: COMPLETED withdrawal {v['withdrawal_id']} vanished: {v['state']}: {v['detail']}")
        for u in report["unexplained"]:
            violations.append(f"{chain}: unexplained spend from a custody key: {u}")
        if report["status"] != "OK" and not violations:
            violations.append(f"{chain}: reconciliation status {report['status']}")
    return violations


def evaluate(
    planned: list[dict[str, Any]],
    database: dict[str, list[dict[str, Any]]],
    observed: dict[str, Any],
    reports: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Every check of a run: the summaries for the report and the violations (empty: pass)."""
    rows = {w["id"]: w for w in database["withdrawals"]}
    histogram, transfer_violations = transfers_per_withdrawal(planned, rows, observed["balances"])
    nonce_summary, nonce_violations = evm_nonces(
        observed["senders"],
        observed["anvil"],
        [c for c in database["claims"] if c["chain"] == "anvil"],
        [a for a in database["attempts"] if a["chain"] == "anvil"],
    )
    hold_counts, hold_violations = holds(database["withdrawals"], database["reservations"])
    return {
        "final_states": final_states(database["withdrawals"]),
        "transfers": histogram,
        "nonces": nonce_summary,
        "holds": hold_counts,
        "violations": {
            "transfers": transfer_violations,
            "nonces": nonce_violations,
            "holds": hold_violations,
            "reconciliation": reconciliation(reports),
            "stuck": stuck(database["withdrawals"]),
            "operator_view": operator_view(planned, rows),
        },
    }
