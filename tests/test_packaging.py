"""A non-editable install of the project's wheel, in a virtualenv outside the repository (so the
repository root is on no path), gives a working `custody`: every command and subcommand loads,
`custody withdrawals pause-all` talks to a real API, `custody api` serves, and `custody worker`
starts (migrating the database from the migrations inside the package) and stops cleanly on
SIGTERM. (Today's main packaged `custody_core*` instead of `core`: all of these failed.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import httpx
import typer
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from cli.main import app
from devnet.local import ROOT, free_port


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for command in group.registered_commands:
        found.append(prefix + (command.name or command.callback.__name__.replace("_", "-"),))  # type: ignore[union-attr]
    for sub in group.registered_groups:
        assert sub.typer_instance is not None and sub.name is not None
        found += _commands(sub.typer_instance, prefix + (sub.name,))
    return found


def _installed(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        cwd=tmp_path,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheel = next(wheels.glob("custody-*.whl"))
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    # The dependencies come from the project's environment; the project itself only from the wheel.
    site = Path(
        subprocess.check_output([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip()
    )
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return venv, env


async def _until_polled(client: Client, task_queue: str) -> None:
    """Until the task queue has a workflow poller and an activity poller (Temporal's view)."""
    for _ in range(300):
        polled = []
        for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
            request = DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind)
            try:
                polled.append(bool((await client.workflow_service.describe_task_queue(request)).pollers))
            except RPCError as error:
                # A dev server on a loaded box has answered this read CANCELLED once (a
                # full-suite run beside a CI run): a read that did not answer is "not yet".
                if error.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
                    raise
                polled.append(False)
        if all(polled):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker polls {task_queue}")


async def test_a_non_editable_install_outside_the_repository_works(tmp_path, api_url, settings, client):
    venv, env = await asyncio.to_thread(_installed, tmp_path)  # the API on this event loop keeps serving
    origin = await asyncio.to_thread(
        subprocess.check_output,
        [str(venv / "bin" / "python"), "-c", "import core, worker; print(core.__file__)"],
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert origin.startswith(str(venv)), f"imported from {origin}, not from the installed package"

    # Every command's help, from the installed package, in one interpreter of the venv.
    commands = [list(c) for c in _commands(app)]
    script = (
        "import json, sys\nfrom typer.testing import CliRunner\nfrom cli.main import app\n"
        "bad = [(c, r.output[-500:]) for c in json.loads(sys.argv[1]) for r in [CliRunner().invoke(app, [*c, '--help'])] if r.exit_code]\n"
        "print(json.dumps(bad))\n"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [str(venv / "bin" / "python"), "-c", script, json.dumps(commands)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0 and json.loads(result.stdout) == [], (result.stdout[-2000:], result.stderr[-2000:])
    assert len(commands) > 30

    paused = await asyncio.to_thread(
        subprocess.run,
        [str(venv / "bin" / "custody"), "withdrawals", "pause-all", "--chain", "anvil", "--reason", "packaging test"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env | {"CUSTODY_API_URL": api_url, "CUSTODY_API_KEY": "dev-ops-key"},
    )
    assert paused.returncode == 0, paused.stderr[-2000:]

    port = free_port()
    api = subprocess.Popen(
        [str(venv / "bin" / "custody"), "api", "--port", str(port)],
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
        env=env
        | {
            "CUSTODY_DATABASE_URL": settings.database_url,
            "CUSTODY_REDIS_URL": settings.redis_url,
            "CUSTODY_TEMPORAL_ADDRESS": settings.temporal_address,
            "CUSTODY_API_METRICS_PORT": "0",
        },
    )
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(200):
                try:
                    live = await http.get(f"http://127.0.0.1:{port}/live")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert live.status_code == 200, live.text
            # The console's templates and static files are package data: rendered from the wheel.
            signin = await http.get(f"http://127.0.0.1:{port}/console/sign-in")
            assert signin.status_code == 200 and 'name="api_key"' in signin.text, signin.text[-500:]
            script = await http.get(f"http://127.0.0.1:{port}/console/static/console.js")
            assert script.status_code == 200 and "data-refresh-url" in script.text
    finally:
        api.terminate()
        await asyncio.to_thread(api.wait, 30)

    worker_env = env | {
        "CUSTODY_ENVIRONMENT": "test",
        "CUSTODY_DATABASE_URL": settings.database_url,
        "CUSTODY_REDIS_URL": settings.redis_url,
        "CUSTODY_TEMPORAL_ADDRESS": settings.temporal_address,
        "CUSTODY_TASK_QUEUE": settings.task_queue + "-pkg",
        "CUSTODY_WORKER_METRICS_PORT": "0",
        "CUSTODY_TEMPORAL_METRICS_PORT": "0",
        "CUSTODY_LOG_JSON": "true",
        "CUSTODY_CHAINS": settings.model_dump_json(include={"chains"}).removeprefix('{"chains":').removesuffix("}"),
    }
    worker = subprocess.Popen(
        [str(venv / "bin" / "custody"), "worker"],
        cwd=tmp_path,
        env=worker_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Its log is read to the end by a thread: a pipe nobody reads fills up and blocks the worker's
    # writes (at shutdown, a thread blocked holding stderr's lock aborts the interpreter).
    lines: list[str] = []
    started_event = threading.Event()

    def read_log() -> None:
        assert worker.stderr is not None
        for line in worker.stderr:
            lines.append(line)
            if '"worker started"' in line:
                started_event.set()

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        started = await asyncio.to_thread(started_event.wait, 30)
        assert started, f"the installed worker did not start (exit {worker.poll()}):\n{''.join(lines[-40:])}"
        # Stopped once it polls, as a worker in service is: a SIGTERM in the same instant as the
        # start races the SDK core's own start-up (seen as an abort, exit -6, under load).
        await _until_polled(client, worker_env["CUSTODY_TASK_QUEUE"])
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 60)
        await asyncio.to_thread(reader.join, 10)
        assert code == 0, f"the worker exited {code} on SIGTERM:\n{''.join(lines[-40:])}"
    finally:
        if worker.poll() is None:
            worker.kill()
