"""The chaos run's verdicts (chaos/checks.py) and plans (workload, faults) on hand-made data:
each check finds the violation it exists for, and passes what is right."""

from __future__ import annotations

import random

from chaos import checks
from chaos.config import ChaosConfig
from chaos.faults import MAX_REORG_DEPTH, WIRE_ACTIONS, plan_faults
from chaos.workload import plan

ETH = 10**18


def planned(index: int, status_id: str | None, destination: str, base_units: int = ETH // 10, **extra) -> dict:
    return {
        "index": index,
        "chain": "anvil",
        "asset": "ETH",
        "amount": "0.1",
        "base_units": base_units,
        "destination": destination,
        "withdrawal_id": status_id,
        "submit_error": None,
        "oversized": False,
        "actions": [],
        **extra,
    }


def row(withdrawal_id: str, status: str, **extra) -> dict:
    return {"id": withdrawal_id, "chain": "anvil", "kind": "TRANSFER", "asset": "ETH", "status": status, "paused": False, **extra}


def test_transfers_are_exactly_one_for_completed_and_none_otherwise() -> None:
    plan_ = [
        planned(0, "ok", "0xA"),
        planned(1, "twice", "0xB"),
        planned(2, "failed-paid", "0xC"),
        planned(3, "cancelled", "0xD"),
        planned(4, "odd", "0xE"),
        planned(5, None, "0xF", submit_error="gave up"),
        planned(6, "big", "0x1", oversized=True),
        planned(7, "open", "0x2"),
    ]
    rows = {
        r["id"]: r
        for r in [
            row("ok", "COMPLETED"),
            row("twice", "COMPLETED"),
            row("failed-paid", "FAILED"),
            row("cancelled", "CANCELLED"),
            row("odd", "COMPLETED"),
            row("big", "COMPLETED"),
            row("open", "CONFIRMING"),
        ]
    }
    balances = {"0xA": ETH // 10, "0xB": 2 * ETH // 10, "0xC": ETH // 10, "0xD": 0, "0xE": ETH // 10 + 1, "0x1": ETH // 10}
    histogram, violations = checks.transfers_per_withdrawal(plan_, rows, balances)
    assert histogram["COMPLETED:1"] == 2 and histogram["COMPLETED:2"] == 1 and histogram["CONFIRMING:0"] == 1
    text = "\n".join(violations)
    assert "twice" in text and "COMPLETED with 2 transfer(s)" in text
    assert "failed-paid" in text and "FAILED with 1 transfer(s)" in text
    assert "odd" in text and "not a multiple" in text
    assert "never accepted" in text and "more than the wallet holds, yet COMPLETED" in text
    assert not any(v.startswith("ok ") or "cancelled" in v or "open" in v for v in violations)
    assert checks.transfers_per_withdrawal(plan_[:1] + plan_[3:4], rows, balances)[1] == []


def evm_view(latest: int, pending: int, mined: list[tuple[str, int]]) -> dict:
    return {"nonces": {"0xS": {"latest": latest, "pending": pending}}, "mined": {"0xS": [{"hash": h, "nonce": n} for h, n in mined]}}


def claim(sequence: int, state: str = "ACTIVE") -> dict:
    return {"chain": "anvil", "sender": "0xS", "sequence": sequence, "withdrawal_id": f"w{sequence}", "state": state}


def test_evm_nonces_flag_foreign_pending_and_unfilled_released_nonces() -> None:
    attempts = [{"tx_hash": h} for h in ("0xa0", "0xa1", "0xa2")]
    clean = evm_view(3, 3, [("0xa0", 0), ("0xA1", 1), ("0xa2", 2)])
    summary, violations = checks.evm_nonces(["0xS"], clean, [claim(0), claim(1, "RELEASED"), claim(2)], attempts)
    assert violations == [] and summary["0xS"] == {"nonce": 3, "mined": 3, "claims": 3, "released": 1}

    foreign = evm_view(2, 3, [("0xa0", 0), ("0xff", 1)])
    _, violations = checks.evm_nonces(["0xS"], foreign, [claim(0), claim(1), claim(3, "RELEASED"), claim(4)], attempts)
    text = "\n".join(violations)
    assert "still pending" in text and "0xff (nonce 1) is no attempt" in text
    assert "nonce 4 claimed by a withdrawal but never mined" in text
    assert "released nonce 3 left unfilled below claimed nonce 4" in text
    _, violations = checks.evm_nonces(["0xS"], evm_view(3, 3, [("0xa0", 0), ("0xa1", 1)]), [], attempts)
    assert violations == ["0xS: on-chain nonce 3 but 2 mined transactions"]


def test_holds_reconciliation_stuck_and_operator_view() -> None:
    withdrawals = [row("a", "COMPLETED"), row("b", "FAILED"), row("c", "SIGNING", paused=True), row("d", "CANCELLED", paused=True)]
    counts, violations = checks.holds(
        withdrawals,
        [
            {"withdrawal_id": "a", "state": "SETTLED"},
            {"withdrawal_id": "b", "state": "HELD"},
            {"withdrawal_id": "c", "state": "HELD"},
        ],
    )
    assert counts == {"HELD": 2, "SETTLED": 1} and violations == ["b: FAILED but its hold is still HELD"]
    assert checks.stuck(withdrawals) == ["c (anvil TRANSFER ETH): still SIGNING (paused)"]

    ok = {"status": "OK", "rows": [{"status": "OK"}], "vanished": [], "unexplained": []}
    assert checks.reconciliation({"anvil": ok}) == []
    drift = {
        "status": "MISMATCH",
        "rows": [{"status": "DRIFT", "wallet_id": "w", "asset": "SOL", "on_chain": "1", "expected": "2", "drift": "-1"}],
        "vanished": [{"withdrawal_id": "x", "state": "MISSING", "detail": "gone"}],
        "unexplained": [{"tx_hash": "t"}],
    }
    found = checks.reconciliation({"solana": drift, "stellar": {"error": "timed out"}})
    assert len(found) == 4 and "DRIFT" in found[0] and "vanished" in found[1] and "unexplained" in found[2]
    assert "did not run" in found[3]

    rows = {r["id"]: r for r in withdrawals}
    refused = planned(0, "d", "0xD", actions=["cancel:WORKFLOW_NOT_RUNNING: tcp connect error"])
    violations = checks.operator_view([refused, planned(1, "b", "0xB", actions=["cancel:CANCEL_TOO_LATE (try 3)"])], rows)
    assert violations == [
        "d (anvil TRANSFER): CANCELLED but still shown paused",
        "d: CANCELLED, yet the cancel was answered 'cancel:WORKFLOW_NOT_RUNNING: tcp connect error'",
    ]


def test_final_states_count_per_chain_and_kind() -> None:
    states = checks.final_states(
        [row("a", "COMPLETED"), row("b", "COMPLETED"), row("g", "COMPLETED", kind="GAP_FILL"), {**row("s", "FAILED"), "chain": "solana"}]
    )
    assert states == {"anvil": {"COMPLETED": 2}, "anvil GAP_FILL": {"COMPLETED": 1}, "solana": {"FAILED": 1}}


def test_plans_come_from_the_seed_alone_and_hold_every_fault_kind() -> None:
    config = ChaosConfig(withdrawals=200, seed=7, fault_window_seconds=60, submit_seconds=40)
    first, again = plan(config, random.Random(7)), plan(config, random.Random(7))
    assert [p.as_dict() for p in first] == [p.as_dict() for p in again]
    assert len({p.destination for p in first}) == 200 and {p.chain for p in first} == {"anvil", "solana", "stellar"}
    assert any(p.cancel_after is not None for p in first) and any(p.pause_after is not None for p in first)
    assert all(0 <= p.at <= 40 for p in first)

    events = plan_faults(config, random.Random(7))
    assert [e.as_dict() for e in events] == [e.as_dict() for e in plan_faults(config, random.Random(7))]
    kinds = {e.kind for e in events}
    assert {"kill_worker", "kill_api", "restart_temporal", "restart_postgres", "reorg", "wire"} <= kinds
    assert "kms_throttle" not in kinds  # no KMS wallets, no KMS faults
    for chain in ("anvil", "solana", "stellar"):
        assert {e.params["episode"] for e in events if e.kind == "wire" and e.params["chain"] == chain} == set(WIRE_ACTIONS)
    assert all(e.params["depth"] <= MAX_REORG_DEPTH for e in events if e.kind == "reorg")
    assert all(1 <= e.at <= 52 for e in events)  # none in the window's last seconds
