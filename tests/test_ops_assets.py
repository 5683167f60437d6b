"""The operator assets shipped in ops/ stay true to the code: every metric the Prometheus alert
rules and the Grafana dashboard name exists, with the labels they select on; and the worker's
database-sampled gauges (open withdrawals, oldest open) report a withdrawal waiting in a status."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import yaml
from prometheus_client import Counter, Gauge, Histogram

from core import metrics
from db.gauges import sample_open_withdrawals
from models.db import Wallet, Withdrawal

OPS = Path(__file__).resolve().parent.parent / "ops"
SELECTOR = re.compile(r"\b(custody_[a-z0-9_]+)(?:\{([^}]*)\})?")


def _defined() -> dict[str, tuple[str, ...]]:
    """Exposed sample name -> label names, for every metric custody defines."""
    exposed: dict[str, tuple[str, ...]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, (Counter, Gauge, Histogram)):
            continue
        name, labels = value._name, tuple(value._labelnames)  # type: ignore[attr-defined]
        if isinstance(value, Counter):
            exposed[name if name.endswith("_total") else name + "_total"] = labels
        elif isinstance(value, Histogram):
            for suffix in ("_bucket", "_sum", "_count"):
                exposed[name + suffix] = labels + (("le",) if suffix == "_bucket" else ())
        else:
            exposed[name] = labels
    return exposed


def _expressions() -> list[str]:
    rules = yaml.safe_load((OPS / "prometheus" / "custody-alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((OPS / "grafana" / "custody-dashboard.json").read_text())
    exprs += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return exprs


def test_every_metric_and_label_the_alerts_and_dashboard_use_exists():
    defined = _defined()
    used = 0
    for expr in _expressions():
        for name, selector in SELECTOR.findall(expr):
            used += 1
            assert name in defined, f"{name} (in {expr!r}) is not a custody metric"
            for matcher in filter(None, (m.strip() for m in selector.split(","))):
                label = re.split(r"[=!~]", matcher, maxsplit=1)[0].strip()
                assert label in defined[name], f"{name} has no label {label!r} (in {expr!r})"
    assert used >= 20


def test_the_alert_rules_cover_what_operators_are_paged_for():
    rules = yaml.safe_load((OPS / "prometheus" / "custody-alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "CustodyWithdrawalStuck",
        "CustodyKmsErrors",
        "CustodyStuckAtFeeCap",
        "CustodyBalanceDrift",
        "CustodyPoolLow",
    } <= names
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"page", "warn"} and rule["annotations"]["summary"]


async def test_the_worker_samples_open_withdrawals_from_the_database(sessions):
    chain = f"c{uuid.uuid4().hex[:8]}"
    async with sessions() as session, session.begin():
        wallet = Wallet(id=str(uuid.uuid4()), owner="alice", chain=chain, label="l", status="ACTIVE", signer_backend="local")
        session.add(wallet)
        await session.flush()
        for status in ("SIGNING", "SIGNING", "CONFIRMING", "COMPLETED"):
            session.add(
                Withdrawal(
                    id=str(uuid.uuid4()),
                    owner="alice",
                    wallet_id=wallet.id,
                    chain=chain,
                    asset="ETH",
                    destination="0x",
                    amount=1,
                    status=status,
                    idempotency_key=uuid.uuid4().hex,
                    request_hash="h",
                )
            )
    await sample_open_withdrawals(sessions)
    open_ = {labels: sample for labels, sample in _samples("custody_withdrawals_open", chain).items()}
    assert open_ == {"SIGNING": 2.0, "CONFIRMING": 1.0}  # COMPLETED is not open
    oldest = _samples("custody_withdrawal_oldest_open_seconds", chain)
    assert set(oldest) == {"SIGNING", "CONFIRMING"} and all(v >= 0 for v in oldest.values())


def _samples(name: str, chain: str) -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {s.labels["status"]: s.value for family in REGISTRY.collect() for s in family.samples if s.name == name and s.labels.get("chain") == chain}
