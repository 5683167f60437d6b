"""Stopping a foreground run (the benchmark, the chaos run) that started a stack of its own.

Ctrl-C raises KeyboardInterrupt, and the run's `finally` stops every server it started and removes
its directory. SIGTERM and SIGHUP (`timeout`, `kill`, a closed terminal) by Python's default end the
process at once instead, leaving PostgreSQL, Temporal, the devnets, the worker and the API running.
"""

from __future__ import annotations

import signal


def stop_like_ctrl_c_on_termination() -> None:
    """From now on SIGTERM and SIGHUP end this process as Ctrl-C does: an exception raised where
    it runs, so `finally` blocks (and asyncio's cancellation of its tasks) stop what it started.
    Once stopping, further signals are ignored so that the stop runs to its end."""

    def stop(signum: int, _frame: object) -> None:
        for each in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(each, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for each in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(each, stop)
