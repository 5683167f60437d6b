"""Prometheus metrics (names under custody_). The worker serves them on
CUSTODY_WORKER_METRICS_PORT, the API on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WITHDRAWALS_REQUESTED = Counter("custody_withdrawals_requested_total", "Withdrawals accepted by the API", ["chain", "asset"])
WITHDRAWALS_FINISHED = Counter("custody_withdrawals_finished_total", "Withdrawals reaching a final status", ["chain", "asset", "status"])
WALLETS_CREATED = Counter("custody_wallets_created_total", "Wallets activated", ["chain", "backend"])
SIGNING_SECONDS = Histogram(
    "custody_signing_duration_seconds",
    "Time to obtain one signature from the key backend",
    ["backend"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BROADCASTS = Counter("custody_broadcasts_total", "Transaction sends by node answer", ["chain", "result"])
ACTIVITY_ERRORS = Counter("custody_activity_errors_total", "Activity failures by error code", ["activity", "code", "permanent"])
WITHDRAWALS_OPEN = Gauge("custody_withdrawals_open", "Withdrawals not yet final, by chain and status (sampled by the worker)", ["chain", "status"])
WITHDRAWAL_OLDEST_OPEN_SECONDS = Gauge(
    "custody_withdrawal_oldest_open_seconds",
    "Seconds since the last status change of the oldest withdrawal in each open status (sampled by the worker)",
    ["chain", "status"],
)
WITHDRAWAL_ALERTS = Counter(
    "custody_withdrawal_alerts_total",
    "Conditions an operator must look at while a withdrawal goes on (STUCK_AT_FEE_CAP, REPLACEMENT_FAILED, ...)",
    ["chain", "code"],
)
ACTIVITY_UNEXPECTED_ERRORS = Counter(
    "custody_activity_unexpected_errors_total",
    "Activity failures custody did not foresee, by activity and exception type (each one is a bug to map)",
    ["activity", "exception"],
)
ACTIVITY_STUCK = Counter(
    "custody_activity_stuck_total",
    "Activities still failing with an unexpected error after the alert threshold of attempts",
    ["activity"],
)
SIGNING_REFUSED = Counter(
    "custody_signing_refused_total",
    "Signatures the signing guard refused: the bytes were not the approved intent (POLICY_VIOLATION)",
    ["chain"],
)
KMS_ERRORS = Counter(
    "custody_kms_errors_total",
    "KMS signer call failures by backend and provider error code",
    ["backend", "code"],
)


# --- key pools (seed 004: HODL -> Bank -> single-use Explorer keys) ---------------------------
POOL_EXPLORERS_ACQUIRED = Counter("custody_pool_explorer_keys_acquired_total", "Explorer keys leased for transaction signing", ["chain"])
POOL_EXPLORERS_RETIRED = Counter(
    "custody_pool_explorer_keys_retired_total",
    "Explorer keys retired after use (reason: returned, lease_expired)",
    ["chain", "reason"],
)
POOL_EXPLORERS_CREATED = Counter("custody_pool_explorer_keys_created_total", "Explorer keys created and funded by the rebalance", ["chain"])
POOL_EXPLORERS_RECOVERED = Counter(
    "custody_pool_explorer_keys_recovered_total", "Retired explorer keys whose funds went back to their bank key", ["chain"]
)
POOL_RECOVERED_AMOUNT = Counter(
    "custody_pool_recovered_amount_total",
    "Native asset recovered from retired explorer keys (in the asset's unit, e.g. ETH, SOL)",
    ["chain", "asset"],
)
POOL_BANKS_FUNDED = Counter("custody_pool_bank_keys_funded_total", "Bank keys topped up from the HODL key", ["chain"])
POOL_KEYS = Gauge("custody_pool_keys", "Pool keys by tier and state (last rebalance)", ["chain", "tier", "state"])
POOL_TIER_BALANCE = Gauge("custody_pool_tier_balance", "Native balance held by each tier (asset unit, last rebalance)", ["chain", "tier"])
POOL_KEY_BALANCE = Histogram(
    "custody_pool_key_balance",
    "Distribution of native balances across the keys of each tier (asset unit, sampled per rebalance)",
    ["chain", "tier"],
    buckets=(0, 0.001, 0.01, 0.1, 1, 10, 100, 1_000, 10_000, 100_000),
)
CHANNEL_LEASES = Counter(
    "custody_channel_leases_total",
    "Stellar channel account lease attempts by result (leased, none_free, underfunded)",
    ["chain", "result"],
)
CHANNELS = Gauge("custody_channel_accounts", "Channel accounts by state (last channel-set run)", ["chain", "state"])

# --- reconciliation (ReconciliationWorkflow: chain vs database) -------------------------------
RECONCILIATION_DRIFT = Gauge(
    "custody_reconciliation_drift",
    "On-chain minus expected balance (asset unit; last reconciliation; only non-zero drift is kept)",
    ["chain", "wallet_id", "asset"],
)
RECONCILIATION_VANISHED = Gauge(
    "custody_reconciliation_vanished_withdrawals",
    "COMPLETED withdrawals whose transaction is no longer on the chain or not successful (last reconciliation)",
    ["chain"],
)
RECONCILIATION_UNEXPLAINED = Gauge(
    "custody_reconciliation_unexplained_transactions",
    "Outgoing transactions or nonces of our keys that no withdrawal explains (last reconciliation)",
    ["chain"],
)
RECONCILIATION_RUNS = Counter("custody_reconciliation_runs_total", "Reconciliation reports by outcome (OK, MISMATCH)", ["chain", "status"])
RECONCILIATION_LAST_RUN = Gauge(
    "custody_reconciliation_last_run_timestamp_seconds", "When the chain's last reconciliation report was made", ["chain"]
)


# --- RPC failover (chains/failover.py): endpoint labels are "<index>-<host[:port]>", never URLs ----
RPC_ENDPOINT_UP = Gauge(
    "custody_rpc_endpoint_up",
    "1 while a chain endpoint's circuit breaker lets requests through (closed or half-open), 0 while open",
    ["chain", "endpoint"],
)
RPC_ENDPOINT_FAILURES = Counter(
    "custody_rpc_endpoint_failures_total",
    "Connectivity failures (refused, reset, timeout, 5xx, 429) per chain endpoint; transaction errors excluded",
    ["chain", "endpoint"],
)
RPC_VERDICTS_HELD = Counter(
    "custody_rpc_verdicts_held_total",
    "SLOT_LOST / EXPIRED verdicts reported as PENDING: a second endpoint disagreed or was unreachable",
    ["chain", "state"],
)
# --- access (api/auth.py, api/ratelimit.py, core/codec.py, activities/access.py) ---------------
AUTH_FAILURES = Counter("custody_auth_failures_total", "Requests refused for want of a valid identity (401) or of a role/scope (403)", ["reason"])
RATE_LIMITED = Counter("custody_rate_limited_total", "Requests answered 429, by bucket", ["bucket"])
RATE_LIMIT_UNAVAILABLE = Counter(
    "custody_rate_limiter_unavailable_total", "Requests that found Redis unreachable (writes refused, reads let through)", ["write"]
)
PLAINTEXT_PAYLOADS_REFUSED = Counter(
    "custody_plaintext_payloads_refused_total", "Unencrypted payloads a worker refused (sent to Temporal without custody's keys)"
)
ACCESS_SIGNING_REFUSED = Counter(
    "custody_access_signing_refused_total",
    "Signing steps stopped by the access re-check (USER_BLOCKED, WALLET_FROZEN, WALLET_INACTIVE, ON_HOLD, APPROVAL_NOT_RECORDED, ...)",
    ["step", "code"],
)


# --- policy engine (activities/policy.py) --------------------------------------------------------
POLICY_DECISIONS = Counter(
    "custody_policy_decisions_total",
    "Policy judgements of withdrawals: stage DECIDE (before funds are held) or RECHECK (before the first signature), by outcome",
    ["stage", "outcome"],
)


# --- webhooks (activities/webhooks.py) ------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "custody_webhook_deliveries_total",
    "Webhook deliveries by how they ended: delivered (a 2xx answer) or failed (retry period over, or endpoint deleted)",
    ["result"],
)
WEBHOOK_ATTEMPTS = Counter(
    "custody_webhook_attempts_total",
    "Webhook POSTs by outcome: 2xx, 3xx, 4xx, 5xx, timeout, error (no answer) or refused (the receiver resolves to a forbidden address)",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "custody_webhook_attempt_duration_seconds",
    "Time from sending a webhook POST to its answer (or to the failure)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
WEBHOOK_OUTBOX_LAG_SECONDS = Gauge(
    "custody_webhook_outbox_lag_seconds",
    "Age of the oldest webhook event not yet turned into deliveries (sampled by the worker from PostgreSQL)",
)
