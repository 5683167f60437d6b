"""The worker writes the workflow modules' bytecode when it starts, so the sandbox, which imports
a workflow's module afresh for every run, loads it instead of compiling the source each time
(core/sandbox_bytecode.py). Checked as in a container: no bytecode written by imports."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

import workflows.withdrawal
from worker import build_worker


def _current_bytecode(source: Path) -> bool:
    cached = Path(importlib.util.cache_from_source(str(source)))
    if not cached.exists():
        return False
    _flags, mtime, size = struct.unpack("<III", cached.read_bytes()[4:16])  # PEP 552 header, timestamp-checked
    stat = source.stat()
    return mtime == int(stat.st_mtime) & 0xFFFFFFFF and size == stat.st_size & 0xFFFFFFFF


async def test_building_a_worker_caches_the_bytecode_of_every_workflow_module(client, settings, sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE, as in many images
    package = Path(workflows.withdrawal.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert Path(workflows.withdrawal.__file__) in modules
    for source in modules:
        Path(importlib.util.cache_from_source(str(source))).unlink(missing_ok=True)

    build_worker(client, settings, sessions)

    assert [m.name for m in modules if not _current_bytecode(m)] == []
