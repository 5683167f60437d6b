"""Finding what a foreground run (the benchmark, the chaos run) left running: it is started with
a TMPDIR of the test's own, which every process it starts inherits."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil


def processes_of(temporary: Path) -> dict[psutil.Process, str]:
    """Running processes started with `temporary` as their TMPDIR (or naming it on their command
    line, as the servers do with their directories), with their command lines."""
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        try:
            inherited = process.environ().get("TMPDIR") == str(temporary)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            inherited = False
        if inherited or str(temporary) in command:
            found[process] = command
    return found


def short_temporary_directory(register_cleanup: Callable[[Callable[[], object]], None]) -> Path:
    """A TMPDIR for a run: short, as PostgreSQL's socket path inside it must stay under the
    kernel's 107 bytes (pytest's tmp_path is too long)."""
    temporary = Path(tempfile.mkdtemp(prefix="run-tmp-", dir="/tmp"))
    register_cleanup(lambda: shutil.rmtree(temporary, ignore_errors=True))
    return temporary


def terminate_once_running(run: subprocess.Popen, temporary: Path, after: str, signum: int) -> list[str]:  # type: ignore[type-arg]
    """Send `signum` to `run` once a process of it whose command line holds `after` runs; wait for
    it to exit (with 128 + signum, as a stop by that signal). Returns the command lines of what
    was still running then, having killed it so that a failure leaves no servers behind."""
    try:
        deadline = time.monotonic() + 180
        while not any(after in command for process, command in processes_of(temporary).items() if process.pid != run.pid):
            assert run.poll() is None and time.monotonic() < deadline, f"the run never started {after}"
            time.sleep(0.2)
        run.send_signal(signum)
        assert run.wait(timeout=120) == 128 + signum
    finally:
        run.kill()
        left_running = processes_of(temporary)
        for process in left_running:
            process.kill()
    return list(left_running.values())
