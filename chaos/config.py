"""What one chaos run does: how many withdrawals, which seed, how long faults last and how long
everything then has to settle. Every random choice of a run comes from `seed`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHAINS = ("anvil", "solana", "stellar")


@dataclass(frozen=True)
class FaultRates:
    """How many of each disruptive event the fault window holds, per 100 withdrawals (at least
    one of each when the rate is above zero), and the probabilities of wire faults while a wire
    fault episode is on."""

    worker_kills: float = 2.0
    api_kills: float = 1.0
    temporal_restarts: float = 0.5
    postgres_restarts: float = 0.5
    reorgs: float = 1.0
    # Wire fault episodes per node: a few seconds during which one kind of fault is on.
    wire_episodes: float = 3.0
    kms_throttles: float = 1.0  # only with a KMS share of wallets


@dataclass(frozen=True)
class ChaosConfig:
    withdrawals: int = 200
    seed: int = 1
    # Faults (process kills, restarts, wire faults, reorgs) happen only inside this window,
    # counted from the first submission; afterwards everything may settle.
    fault_window_seconds: float = 60.0
    # Submissions are spread over this many seconds (inside the fault window).
    submit_seconds: float = 40.0
    # After the fault window, every withdrawal must be final within this many seconds.
    settle_seconds: float = 150.0
    wallets_per_chain: int = 3
    cancel_share: float = 0.08
    pause_share: float = 0.08
    # Withdrawals asking for more than the wallet holds: FAILED INSUFFICIENT_FUNDS, nothing sent.
    oversized_share: float = 0.03
    # Share of wallets whose keys live in the AWS KMS devnet (0: local keystore only).
    kms_share: float = 0.0
    rates: FaultRates = field(default_factory=FaultRates)
    work_dir: Path | None = None  # None: a fresh temporary directory, removed unless keep
    keep: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["work_dir"] = str(self.work_dir) if self.work_dir else None
        return data
