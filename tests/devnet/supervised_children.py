"""A tiny stack for tests/devnet/test_supervisor.py: ``python -m tests.devnet.supervised_children DIR``.

It runs devnet.supervisor exactly as ``./dev up`` does (signal handlers, start in order, supervise,
stop in reverse), over three small Python children ``a``, ``b`` and ``c``. Each child:

* spawns a grandchild (to show that stopping a child stops what it started), writes
  ``DIR/<name>.pid`` = "<pid> <grandchild pid>", and is ready once that file names it;
* on SIGTERM appends "<name> term <pid>" to ``DIR/events`` and exits, unless ``DIR/<name>.hold``
  exists: then it first waits for ``DIR/release`` (a slow shutdown, to send a second signal into).

``DIR/<name>.unready`` keeps that child from ever becoming ready (a stop during start-up);
``DIR/<name>.crash`` makes it exit at once with status 3 (a start that fails). The
supervisor's lines go to stdout; "all started" is printed once every child is ready.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

from devnet.supervisor import Backoff, ChildProcess, ServiceFailed, StopRequested, Supervisor

CHILD = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    name, workdir = sys.argv[1], sys.argv[2]
    def path(suffix):
        return os.path.join(workdir, name + suffix)
    def on_term(*_):
        with open(os.path.join(workdir, "events"), "a") as f:
            f.write(f"{name} term {os.getpid()}\\n")
        if os.path.exists(path(".hold")):
            while not os.path.exists(os.path.join(workdir, "release")):
                time.sleep(0.01)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    if os.path.exists(path(".crash")):
        print(f"{name} cannot start", flush=True)
        sys.exit(3)
    grandchild = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(60)"])
    with open(path(".tmp"), "w") as f:
        f.write(f"{os.getpid()} {grandchild.pid}")
    os.replace(path(".tmp"), path(".pid"))
    while True:
        signal.pause()
    """
)


def _ready(workdir: Path, child: ChildProcess) -> bool:
    if (workdir / f"{child.name}.unready").exists():
        return False
    try:
        return (workdir / f"{child.name}.pid").read_text().split()[0] == str(child.pid)
    except (OSError, IndexError):
        return False


def main(workdir: Path) -> int:
    supervisor = Supervisor(backoff=Backoff(initial=0.2, maximum=0.8, reset_after=60))
    supervisor.install_signal_handlers()
    try:
        for name in ("a", "b", "c"):
            argv = [sys.executable, "-c", CHILD, name, str(workdir)]
            child = ChildProcess(name, argv, workdir / "logs", ready=lambda child: _ready(workdir, child))
            supervisor.start(child, ready_timeout=30)
        print("all started", flush=True)
        supervisor.run()
    except StopRequested:
        print("stopped while starting", flush=True)
    except ServiceFailed as exc:
        print(f"failed: {exc}", flush=True)
        return 1
    finally:
        supervisor.stop_all()
        supervisor.close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[2])
    sys.exit(main(Path(sys.argv[1])))
