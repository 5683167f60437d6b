"""Python 3.11's module import lock is not re-entrant (CPython gh-91351, fixed in 3.12): when the
garbage collector runs a finalizer that imports while this thread waits for a module lock that
another thread holds, the waiting import dies with KeyError(<thread id>). Temporal's sandbox imports
the workflow modules at worker construction and on workflow threads, so a worker failed its sandbox
validation at random in CI. core.importlock backports the 3.12 fix.

The collector runs finalizers at an arbitrary allocation; the only allocation in the waiting path
is the `set()` of `_ModuleLock.has_deadlock`. A trace hook runs the finalizer's import exactly there,
so the race happens every time instead of once in a few hundred CI runs."""

from __future__ import annotations

import importlib
import itertools
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import core.importlock  # noqa: F401  (applied on import, as worker.py does)

_probes = itertools.count()


def _import_as_a_finalizer_would() -> None:
    try:
        __import__(f"_custody_probe_never_there_{next(_probes)}")
    except ImportError:
        pass


def test_an_import_run_while_waiting_for_a_contended_module_lock_does_not_break_the_waiting_import(tmp_path: Path):
    name = f"_custody_contended_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text("VALUE = 42\n")
    sys.path.insert(0, str(tmp_path))
    holder_has_lock, release = threading.Event(), threading.Event()

    def hold_the_module_lock() -> None:  # another thread in the middle of importing the same module
        lock = importlib._bootstrap._get_module_lock(name)  # type: ignore[attr-defined]
        lock.acquire()
        holder_has_lock.set()
        release.wait(10)
        lock.release()

    interrupted = []

    def finalizer_at_the_allocation(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code.co_name == "has_deadlock" and not interrupted:
            interrupted.append(True)
            _import_as_a_finalizer_would()
            release.set()  # the holder may finish now; the waiting import then takes the lock
        return None

    holder = threading.Thread(target=hold_the_module_lock)
    holder.start()
    assert holder_has_lock.wait(10)
    sys.settrace(finalizer_at_the_allocation)
    try:
        module = importlib.import_module(name)
    finally:
        sys.settrace(None)
        release.set()
        holder.join(10)
        sys.path.remove(str(tmp_path))
    assert interrupted, "the waiting import never checked for a deadlock: the race was not reproduced"
    assert module.VALUE == 42
