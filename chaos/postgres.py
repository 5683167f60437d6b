"""The chaos stack's PostgreSQL (pgserver's PostgreSQL 16): a data directory kept for the whole
run, so it can be crashed (`pg_ctl stop -m immediate`: no shutdown checkpoint, recovery from the
WAL on the next start, every client connection cut) and started again with the same data."""

from __future__ import annotations

import threading
from pathlib import Path


class ChaosPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.restarts = 0
        self.wanted = False  # should be running (a crash is undone by resume, or the supervisor)
        self._user: str | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@/postgres?host={self.data_dir}"

    def start(self) -> None:
        import pgserver

        # cleanup_mode=None: this process stops it (pgserver's own handle would stop only the
        # postmaster it started, and we start new ones).
        server = pgserver.get_server(self.data_dir, cleanup_mode=None)
        server.psql("SELECT 1;")
        self._user = server.system_user
        self.wanted = True

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(args, pgdata=self.data_dir, user=self._user, timeout=60)

    def crash(self) -> None:
        """Stop it the hard way: like a power cut for the clients (WAL recovery on start)."""
        with self._lock:
            self.wanted = False
            self._pg_ctl(["-w", "-m", "immediate", "stop"])

    def resume(self) -> None:
        """Start it again with the options it last ran with (postmaster.opts: the same socket)."""
        with self._lock:
            self.wanted = True  # if this start fails, the supervisor tries again
            self._pg_ctl(["-w", "-l", str(self.data_dir / "log"), "restart"])
            self.restarts += 1

    def down_unplanned(self) -> bool:
        """Should be running, is not (a failed restart): the supervisor resumes it."""
        if not self.wanted or self._lock.locked():
            return False
        return self._postmaster() is None

    def cpu_seconds(self) -> float:
        """CPU time of the running postmaster and its backends since its last start."""
        import psutil

        root = self._postmaster()
        if root is None:
            return 0.0
        try:
            own = root.cpu_times()  # children_*: backends that already exited
            total = (
                own.user
                + own.system
                + own.children_user
                + own.children_system
                + sum(t.user + t.system for t in (c.cpu_times() for c in root.children(recursive=True)))
            )
        except (OSError, ValueError, psutil.Error):
            return 0.0
        return round(total, 1)

    def _postmaster(self):  # type: ignore[no-untyped-def]
        """The running postmaster (psutil.Process), or None."""
        import psutil

        try:
            return psutil.Process(int((self.data_dir / "postmaster.pid").read_text().split()[0]))
        except (OSError, ValueError, psutil.Error):
            return None

    def stop(self) -> None:
        self.wanted = False
        with self._lock:
            try:
                self._pg_ctl(["-w", "-m", "fast", "stop"])
            except Exception:  # already stopped
                pass
