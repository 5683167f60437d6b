"""Prometheus metrics (names under custody_). The worker serves them on
CUSTODY_WORKER_METRICS_PORT, the API on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

WITHDRAWALS_REQUESTED = Counter(
    "custody_withdrawals_requested_total", "Withdrawals accepted by the API", ["chain", "asset"]
)
WITHDRAWALS_FINISHED = Counter(
    "custody_withdrawals_finished_total", "Withdrawals reaching a final status", ["chain", "asset", "status"]
)
WALLETS_CREATED = Counter("custody_wallets_created_total", "Wallets activated", ["chain", "backend"])
SIGNING_SECONDS = Histogram(
    "custody_signing_duration_seconds",
    "Time to obtain one signature from the key backend",
    ["backend"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BROADCASTS = Counter(
    "custody_broadcasts_total", "Transaction sends by node answer", ["chain", "result"]
)
ACTIVITY_ERRORS = Counter(
    "custody_activity_errors_total", "Activity failures by error code", ["activity", "code", "permanent"]
)
KMS_ERRORS = Counter(
    "custody_kms_errors_total",
    "KMS signer call failures by backend and provider error code",
    ["backend", "code"],
)
