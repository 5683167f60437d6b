"""devnet.supervisor (what ``./dev up`` runs on): real processes, real signals.

The stack under test is tests/devnet/supervised_children.py: the supervisor in its own process
(it installs signal handlers), over three small Python children that each spawn a grandchild.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devnet.supervisor import Backoff

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("a", "b", "c")


def test_backoff_doubles_up_to_the_cap_and_starts_over_after_a_healthy_run() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, reset_after=60.0)
    delays: list[float] = []
    delay = None
    for _ in range(7):  # a crash loop: every run dies at once
        delay = backoff.next_delay(delay, uptime=0.5)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.next_delay(30.0, uptime=59.0) == 30.0
    assert backoff.next_delay(30.0, uptime=60.0) == 1.0  # it had stayed up: a fresh start


# ----------------------------------------------------------------------------- helpers


def _alive(pid: int) -> bool:
    """Running, not a zombie (a zombie is dead; only its parent has not read its status yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class Stack:
    workdir: Path
    process: subprocess.Popen[bytes]
    out_path: Path

    def output(self) -> str:
        return self.out_path.read_text()

    def pids(self, name: str) -> tuple[int, int]:
        """(child pid, grandchild pid) as the child wrote them."""
        child, grandchild = (self.workdir / f"{name}.pid").read_text().split()
        return int(child), int(grandchild)

    def events(self) -> list[str]:
        path = self.workdir / "events"
        return path.read_text().splitlines() if path.exists() else []

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self) -> int:
        return self.process.wait(30)


@pytest.fixture
def start_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def start(*, hold: str | None = None, unready: str | None = None, crash: str | None = None, wait_started: bool = True) -> Stack:
        for marker, name in (("hold", hold), ("unready", unready), ("crash", crash)):
            if name:
                (tmp_path / f"{name}.{marker}").touch()
        out_path = tmp_path / "supervisor.out"
        with open(out_path, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.devnet.supervised_children", str(tmp_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        stack = Stack(tmp_path, process, out_path)
        stacks.append(stack)
        if wait_started:
            _until(lambda: "all started" in stack.output(), f"the stack to start:\n{stack.output()}")
        return stack

    yield start
    for stack in stacks:  # a failed test must not leave its processes behind
        if stack.process.poll() is None:
            os.killpg(stack.process.pid, signal.SIGKILL)
            stack.process.wait()
        for pid_file in tmp_path.glob("*.pid"):
            child, grandchild = map(int, pid_file.read_text().split())
            for kill, target in ((os.killpg, child), (os.kill, child), (os.kill, grandchild)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    kill(target, signal.SIGKILL)


def _all_pids(stack: Stack) -> list[int]:
    return [pid for name in NAMES for pid in stack.pids(name)]


# ----------------------------------------------------------------------------- restart


def test_a_child_killed_with_sigkill_is_restarted_and_the_others_keep_running(start_stack) -> None:
    stack = start_stack()
    a, b, c = (stack.pids(name) for name in NAMES)

    os.kill(b[0], signal.SIGKILL)

    _until(lambda: stack.pids("b")[0] != b[0], "b to be started again")
    _until(lambda: "b is back" in stack.output(), "b to be reported ready again")
    out = stack.output()
    assert "b exited with code -9; restarting in 0.2 s (restart 1)" in out, out
    assert _alive(stack.pids("b")[0]) and _alive(stack.pids("b")[1])
    _until(lambda: not _alive(b[1]), "the killed child's grandchild to be stopped with it")
    assert stack.pids("a") == a and stack.pids("c") == c, "the other children were restarted"
    assert all(_alive(pid) for pid in (*a, *c)), "the other children stopped"
    assert "a exited" not in out and "c exited" not in out
    assert stack.process.poll() is None, "the supervisor itself stopped"

    # killed again soon after: the backoff doubles
    os.kill(stack.pids("b")[0], signal.SIGKILL)
    _until(lambda: "(restart 2)" in stack.output(), "the second restart")
    assert "b exited with code -9; restarting in 0.4 s (restart 2)" in stack.output()


# ----------------------------------------------------------------------------- stop


def test_sigterm_stops_every_child_once_in_reverse_order_with_no_orphans(start_stack) -> None:
    stack = start_stack()
    pids = _all_pids(stack)
    assert all(_alive(pid) for pid in pids)

    stack.signal(signal.SIGTERM)

    assert stack.wait_exit() == 0, stack.output()
    assert [line.split()[:2] for line in stack.events()] == [["c", "term"], ["b", "term"], ["a", "term"]]
    assert [pid for pid in pids if _alive(pid)] == [], "processes left running after the stop"
    assert "exited with code" not in stack.output(), "a stopped child was taken for a crashed one"


def test_a_second_sigterm_during_shutdown_does_not_cut_it_short(start_stack) -> None:
    stack = start_stack(hold="c")  # c, stopped first, takes its time until told to finish
    pids = _all_pids(stack)

    stack.signal(signal.SIGTERM)
    _until(lambda: len(stack.events()) == 1, "c to receive its SIGTERM")
    stack.signal(signal.SIGTERM)
    _until(lambda: "already stopping" in stack.output(), "the supervisor to see the second signal")
    stack.signal(signal.SIGINT)  # and a Ctrl-C on top
    (stack.workdir / "release").touch()

    assert stack.wait_exit() == 0, stack.output()
    assert [line.split()[:2] for line in stack.events()] == [["c", "term"], ["b", "term"], ["a", "term"]]
    assert [pid for pid in pids if _alive(pid)] == [], "processes left running after the stop"


def test_a_stop_while_starting_stops_what_was_started(start_stack) -> None:
    stack = start_stack(unready="b", wait_started=False)  # b never answers: the start-up waits on it
    _until(lambda: (stack.workdir / "b.pid").exists(), "a to start, then b to be launched")
    a, b = stack.pids("a"), stack.pids("b")

    stack.signal(signal.SIGINT)

    assert stack.wait_exit() == 0, stack.output()
    assert "stopped while starting" in stack.output()
    assert [line.split()[:2] for line in stack.events()] == [["b", "term"], ["a", "term"]]
    assert [pid for pid in (*a, *b) if _alive(pid)] == [], "processes left running after the stop"


def test_a_child_that_exits_while_starting_fails_the_start_and_stops_what_was_started(start_stack) -> None:
    stack = start_stack(crash="b", wait_started=False)

    assert stack.wait_exit() == 1, stack.output()
    out = stack.output()
    assert "failed: b exited with code 3" in out and "b cannot start" in out, out  # with the end of its log
    assert [line.split()[:2] for line in stack.events()] == [["a", "term"]]
    assert [pid for pid in stack.pids("a") if _alive(pid)] == []
