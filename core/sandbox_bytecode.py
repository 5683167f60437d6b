"""Workflow modules' bytecode written once, for the sandbox to load instead of compiling.

Temporal's workflow sandbox imports a workflow's module afresh for every workflow run. Python
reads that import's code from the module's cached bytecode (`__pycache__`) when there is a
current one, and otherwise compiles the source, every time: about 3.4 ms for
workflows/withdrawal.py on the bench machine, per withdrawal and per continued run. Nothing writes
the cache where PYTHONDONTWRITEBYTECODE is set (common in containers, set on the development
machines) or where the code is not writable by the worker (the image runs as an unprivileged
user): the Dockerfile compiles it at build time, and the worker writes it at start when it can.
"""

from __future__ import annotations

import compileall
import logging
from pathlib import Path

log = logging.getLogger("custody.worker")


def cache_workflow_bytecode(package_dir: Path) -> bool:
    """Write the current bytecode of every module in `package_dir` (True when all are cached).
    A directory the worker may not write is no error: it only costs the compile per run."""
    cached = bool(compileall.compile_dir(package_dir, maxlevels=0, quiet=2))  # reports nothing; False on any failure
    if not cached:
        log.warning("workflow bytecode not cached: each workflow run compiles its module", extra={"directory": str(package_dir)})
    return cached
