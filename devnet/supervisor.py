"""Keeps the dev stack's processes running.

``./dev up`` starts each service once, in order, and waits until it answers; from then on the
supervisor watches them all. A service that exits is started again after a backoff (1 s doubling
to 30 s, back to 1 s once it had stayed up for a minute), with one log line, while the others
keep running::

    [dev] api exited with code -11; restarting in 2.0 s (restart 2)

SIGINT, SIGTERM and SIGHUP stop every service in reverse start order, exactly once. The signal
handlers only record the signal (and wake the loop through a wakeup fd): nothing is raised at an
arbitrary point, so a second Ctrl-C while stopping cannot cut the shutdown short and leave servers
running. Each child runs in its own session (a terminal's Ctrl-C reaches only the supervisor, which
then stops the children in order) and is stopped as a process group, so what it spawned goes too.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequested(Exception):
    """A stop signal arrived while the stack was still starting."""


class ServiceFailed(RuntimeError):
    """A service exited or never answered while it was being started for the first time."""


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a service that exited: doubles from ``initial`` up to ``maximum``;
    a run that lasted ``reset_after`` seconds or more counts as healthy and starts over."""

    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0

    def next_delay(self, previous: float | None, uptime: float) -> float:
        if previous is None or uptime >= self.reset_after:
            return self.initial
        return min(previous * 2, self.maximum)


class Service(Protocol):
    """What the supervisor drives. ``launch`` returns at once; ``ready`` says whether it answers."""

    name: str
    stop_timeout: float

    def launch(self) -> None: ...

    def ready(self) -> bool: ...

    def exit_code(self) -> int | None:
        """None while it runs; else its exit status (negative: killed by that signal)."""
        ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def log_hint(self) -> str:
        """Where its output goes, for messages."""
        ...

    def tail(self, lines: int = 20) -> str:
        """The end of its output, for a failure message."""
        ...


class ChildProcess:
    """A command run as a child in its own session, output appended to ``<log_dir>/<name>.log``.

    ``ready(child)`` says whether the running child answers (e.g. its port is open).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        ready: Callable[[ChildProcess], bool] = lambda child: True,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._ready = ready
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,
            )

    def ready(self) -> bool:
        return self._ready(self)

    def exit_code(self) -> int | None:
        if self.process is None:
            return None
        code = self.process.poll()
        if code is not None:
            # What it spawned must not outlive it: a restart would find its ports taken.
            self._signal_group(signal.SIGKILL)
        return code

    def terminate(self) -> None:
        self._signal_group(self.stop_signal)

    def kill(self) -> None:
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        try:
            # start_new_session made the child a group leader: its pid is the group id, and the group
            # lives on (and can be signalled) while any member does, even after the leader exited.
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def log_hint(self) -> str:
        try:
            return os.path.relpath(self.log_path)
        except ValueError:
            return str(self.log_path)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class _Watch:
    service: Service
    started_at: float
    restarts: int = 0
    delay: float | None = None
    restart_at: float | None = None
    awaiting_ready: bool = False


class Supervisor:
    """Starts services in order, restarts the ones that exit, stops them all once, in reverse."""

    def __init__(
        self,
        *,
        backoff: Backoff = Backoff(),
        say: Callable[[str], None] | None = None,
        poll_interval: float = 0.25,
    ) -> None:
        self.backoff = backoff
        self.poll_interval = poll_interval
        self._say = say or (lambda line: print(f"[dev] {line}", flush=True))
        self._watches: list[_Watch] = []
        self._signals: list[int] = []
        self._reported_signals = 0
        self._stopping = False
        self._stopped = False
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._previous_handlers: dict[int, object] = {}
        self._previous_wakeup_fd: int | None = None

    # ------------------------------------------------------------------ signals

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM/SIGHUP request a stop; SIGCHLD wakes the loop so an exit is seen at once."""
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in STOP_SIGNALS:
            self._previous_handlers[signum] = signal.signal(signum, self._on_stop_signal)
        self._previous_handlers[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, lambda *_: None)

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None

    def _on_stop_signal(self, signum: int, _frame: object) -> None:
        # Only record it: printing or raising here could interrupt the main code anywhere.
        self._signals.append(signum)

    @property
    def stop_requested(self) -> bool:
        return bool(self._signals) or self._stopping

    def raise_if_stopping(self) -> None:
        """For the wiring between steps of the start-up: abandon it once a stop was asked for."""
        if self.stop_requested:
            raise StopRequested()

    def _wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` s; a signal (stop, or a child exiting) ends it early."""
        readable, _, _ = select.select([self._wake_r], [], [], max(timeout, 0))
        if readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        if self._stopping and len(self._signals) > self._reported_signals:
            self._reported_signals = len(self._signals)
            self._say("already stopping; the servers are being stopped in order")

    # ------------------------------------------------------------------ start

    def start(self, service: Service, ready_timeout: float = 60.0) -> Service:
        """Launch ``service`` and wait until it is ready; from then on it is supervised.

        Raises StopRequested if a stop signal arrives meanwhile, ServiceFailed if it exits or does
        not answer in time (it is then stopped with everything started before it, by ``stop_all``).
        """
        self.raise_if_stopping()
        service.launch()
        self._watches.append(_Watch(service, time.monotonic()))
        deadline = time.monotonic() + ready_timeout
        while True:
            self.raise_if_stopping()
            code = service.exit_code()
            if code is not None:
                raise ServiceFailed(f"{service.name} exited with code {code}; log {service.log_hint()}:\n{service.tail()}")
            if service.ready():
                return service
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{service.name} did not become ready in {ready_timeout:.0f}s; log {service.log_hint()}:\n{service.tail()}")
            self._wait(0.1)

    # ------------------------------------------------------------------ supervise

    def run(self) -> None:
        """Watch every started service until a stop is requested (then call ``stop_all``)."""
        while not self.stop_requested:
            self.check()
            self._wait(self._next_timeout())

    def check(self) -> None:
        """One pass: notice exits, restart the services whose backoff has passed, report recoveries."""
        now = time.monotonic()
        for watch in self._watches:
            service = watch.service
            if watch.restart_at is None:
                code = service.exit_code()
                if code is None:
                    if watch.awaiting_ready and service.ready():
                        watch.awaiting_ready = False
                        self._say(f"{service.name} is back")
                    continue
                watch.delay = self.backoff.next_delay(watch.delay, now - watch.started_at)
                watch.restarts += 1
                watch.restart_at = now + watch.delay
                watch.awaiting_ready = False
                self._say(
                    f"{service.name} exited with code {code}; restarting in {watch.delay:.1f} s (restart {watch.restarts}); log {service.log_hint()}"
                )
            elif now >= watch.restart_at and not self.stop_requested:
                watch.restart_at = None
                watch.started_at = now
                watch.awaiting_ready = True
                service.launch()

    def _next_timeout(self) -> float:
        now = time.monotonic()
        pending = [w.restart_at - now for w in self._watches if w.restart_at is not None]
        return min([self.poll_interval, *pending])

    # ------------------------------------------------------------------ stop

    def stop_all(self) -> None:
        """Stop every started service in reverse start order. Runs once; later calls do nothing."""
        if self._stopped:
            return
        self._stopping = True
        self._reported_signals = len(self._signals)
        try:
            while self._watches:
                self._stop_one(self._watches.pop().service)
        finally:
            self._stopped = True

    def _stop_one(self, service: Service) -> None:
        if service.exit_code() is not None:
            return
        service.terminate()
        deadline = time.monotonic() + service.stop_timeout
        while service.exit_code() is None:
            if time.monotonic() > deadline:
                self._say(f"{service.name} did not stop in {service.stop_timeout:.0f} s; killing it")
                service.kill()
                kill_deadline = time.monotonic() + 5
                while service.exit_code() is None and time.monotonic() < kill_deadline:
                    self._wait(0.05)
                return
            self._wait(0.05)

    def close(self) -> None:
        self.restore_signal_handlers()
        self._wake_r.close()
        self._wake_w.close()
