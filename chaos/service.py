"""One supervised child process of the chaos stack: started until it answers, killed with
SIGKILL on purpose, started again on the same ports and files. A child that dies when nobody
killed it is noticed and counted, and started again like a supervisor would."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devnet import local


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    log_dir: Path
    ready: Callable[[], bool]
    env: dict[str, str] | None = None
    start_timeout: float = 90.0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    wanted: bool = False  # should be running: started, and not killed or stopped on purpose since
    unplanned_exits: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # of every process this service ran, sampled (see sample_cpu)
    _cpu_seen: dict[int, float] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start and wait until ready; a child that exits while starting (its dependencies
        are restarting too) is started again with a growing pause, as a supervisor would."""
        with self._lock:
            self.wanted = True  # if this start fails, the supervisor tries again
            if self.alive():
                return  # started by an overlapping fault's restart already
            deadline = time.monotonic() + self.start_timeout
            pause = 0.5
            while True:
                try:
                    managed = local.spawn(self.name, self.argv, self.log_dir, self.ready, timeout=max(deadline - time.monotonic(), 1.0), env=self.env)
                    self.process = managed.process
                    self.starts += 1
                    return
                except RuntimeError:  # exited before it was ready
                    if time.monotonic() + pause > deadline:
                        raise
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)

    def kill(self) -> None:
        """SIGKILL the child's whole process group (it runs in a session of its own)."""
        with self._lock:
            if self.process is None or self.process.poll() is not None:
                return
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
            self.process, self.wanted = None, False  # down on purpose until start()
            self.kills += 1

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        with self._lock:
            process = self.process
            self.wanted = False
            if process is None or process.poll() is not None:
                self.process = None
                return
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            self.process = None

    def check(self) -> bool:
        """False when the child should be running and is not (the caller starts it again): it
        died unasked (recorded), or a planned restart failed."""
        if self._lock.locked():
            return True  # being started, killed or stopped right now
        if self.process is None:
            return not self.wanted
        code = self.process.poll()
        if code is None:
            return True
        self.unplanned_exits.append(f"exit {code}")
        self.process = None
        return False

    def sample_cpu(self) -> None:
        """Add the CPU time the current process used since the last sample (Linux /proc)."""
        process = self.process
        if process is None:
            return
        try:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        used = (int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        self.cpu_seconds += used - self._cpu_seen.get(process.pid, 0.0)
        self._cpu_seen[process.pid] = used

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
