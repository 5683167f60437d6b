"""Key pools (seed 004): HODL (cold) -> Bank -> single-use Explorer keys, per chain.

Pool keys ARE wallets (owner ``pool:<chain>``) and every pool movement IS a withdrawal row owned by
``pool:<chain>``, run as ``withdrawal-<id>``: one exactly-once mechanism for everything. The
rebalance activities here only decide *which* rows must exist and insert them idempotently; the
idempotency key of each row derives from the rebalance run (its workflow id) and the step:

    rebalance:<chain>:<run>:hodl | :bank-<i> | :explorer:<i>     pool wallets
    rebalance:<chain>:<run>:sweep:<explorer wallet id>             recovery (explorer -> its bank)
    rebalance:<chain>:<run>:topup:<bank wallet id>                 HODL -> bank
    rebalance:<chain>:<creating run>:fund:<explorer wallet id>     bank -> new explorer

so a retried activity, a replayed or reset workflow, or a second run finding leftovers of a crashed
one reaches the same rows and the same child workflows. Each planner runs under a per-chain
PostgreSQL advisory lock, so two overlapping runs cannot both decide to move the same money.

Leasing is an atomic claim (``SELECT ... FOR UPDATE SKIP LOCKED``): a key is handed out once.

Planning (activities/pool_planning.py) decides and inserts the rows; execution
(activities/pool_execution.py) makes keys, waits and leases; leasing itself is
activities/pool_leases.py and reading a pool activities/pool_snapshot.py. This module composes
the activity class the worker registers and keeps the names others import from here.
"""

from __future__ import annotations

from activities.pool_common import FINAL, PoolNotConfigured, pool_settings, units
from activities.pool_execution import WAIT_POLL_SECONDS, LeaseSpend, PoolExecution
from activities.pool_leases import (
    LeaseAlreadyUsed,
    LeaseNotActive,
    LeaseNotFound,
    NoExplorerAvailable,
    expire_leases,
    lease_explorer,
    lease_withdrawal,
    return_explorer,
)
from activities.pool_planning import CompleteRebalance, PoolPlanning
from activities.pool_snapshot import PoolSnapshot, pool_snapshot, record_pool_metrics

__all__ = [
    "FINAL",
    "WAIT_POLL_SECONDS",
    "CompleteRebalance",
    "LeaseAlreadyUsed",
    "LeaseNotActive",
    "LeaseNotFound",
    "LeaseSpend",
    "NoExplorerAvailable",
    "PoolActivities",
    "PoolNotConfigured",
    "PoolSnapshot",
    "expire_leases",
    "lease_explorer",
    "lease_withdrawal",
    "pool_settings",
    "pool_snapshot",
    "record_pool_metrics",
    "return_explorer",
    "units",
]


class PoolActivities(PoolPlanning, PoolExecution):
    """Every pool activity on one instance, registered by worker.py under its activity names."""
