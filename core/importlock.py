"""Backport of CPython gh-91351 (fixed in 3.12) for Python 3.11: a re-entrant-safe import lock.

`_ModuleLock.acquire` records what each thread waits for in `importlib._bootstrap._blocking_on`
(thread id -> lock) and deletes the entry when done. If the same thread imports again in between
(a garbage-collector finalizer that imports runs at the allocation inside `has_deadlock`), the
inner import deletes the entry and the outer one dies with KeyError(<thread id>). Temporal's
workflow sandbox imports the workflow modules at worker construction and on its workflow threads,
so a worker failed sandbox validation at random. As in 3.12, each thread keeps a stack of the locks
it waits for; the deadlock check sees the innermost. Imported for its effect by worker.py (and so
by every process that builds a worker); a no-op on 3.12+.
"""

from __future__ import annotations

import importlib._bootstrap as _bootstrap
import sys
from typing import Any


class _WaitStacks(dict):  # type: ignore[type-arg]
    """thread id -> the lock it waits for, tolerating nested waits of one thread."""

    def __init__(self) -> None:
        super().__init__()
        self._stacks: dict[int, list[Any]] = {}

    def __setitem__(self, tid: int, lock: Any) -> None:
        self._stacks.setdefault(tid, []).append(lock)
        super().__setitem__(tid, lock)

    def __delitem__(self, tid: int) -> None:
        stack = self._stacks.get(tid)
        if not stack:
            return
        stack.pop()
        if stack:
            super().__setitem__(tid, stack[-1])  # back to waiting for the outer lock
        else:
            del self._stacks[tid]
            super().__delitem__(tid)


def apply() -> None:
    if sys.version_info >= (3, 12) or isinstance(_bootstrap._blocking_on, _WaitStacks):  # type: ignore[attr-defined]
        return
    # Swapped under the global import lock so no acquire() is between its set and its delete.
    import _imp

    _imp.acquire_lock()
    try:
        waits = _WaitStacks()
        for tid, lock in list(_bootstrap._blocking_on.items()):  # type: ignore[attr-defined]
            waits[tid] = lock
        _bootstrap._blocking_on = waits  # type: ignore[attr-defined]
    finally:
        _imp.release_lock()


apply()
