"""README's Five-minute tour, run as printed against a stack started the way `./dev up` starts it
(`python -m devnet.stack`, on free ports, its state in a temporary directory): every bash block of
the tour, in order, with curl failing on any HTTP error and each command's `# -> text` checked
against what that command printed. A command that fails, or prints something else than README
says, fails the test with its output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devnet import local

README = local.ROOT / "README.md"
STACK_READY_SECONDS = 150
TOUR_SECONDS = 300
PORT_NAMES = ("API", "TEMPORAL", "TEMPORAL_UI", "ANVIL", "REDIS", "SOLANA", "STELLAR", "WORKER_METRICS", "TEMPORAL_METRICS")


def tour_commands(readme: str) -> list[str]:
    """The tour's commands in order: each bash block of the section, split into logical lines
    (a trailing backslash continues a line; a `name() {` definition runs to its closing `}`);
    comment-only lines are dropped."""
    section = readme[readme.index("## Five-minute tour") : readme.index("## How a withdrawal works")]
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        pending: list[str] = []
        in_function = False
        for line in block.splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            pending.append(line)
            if re.match(r"^\w+\(\) \{", line):
                in_function = True
            if line.endswith("\\") or (in_function and line.strip() != "}"):
                continue
            commands.append("\n".join(pending))
            pending, in_function = [], False
        assert not pending, f"unterminated command in README's tour: {pending}"
    return commands


def expectation(command: str) -> str | None:
    """What README says the command prints: the text after `# -> ` on its last line."""
    match = re.search(r"#\s*->\s*(.+)$", command.splitlines()[-1])
    return match.group(1).strip() if match else None


def test_the_tour_parses_into_commands_with_expectations() -> None:
    commands = tour_commands(README.read_text())
    assert len(commands) > 30
    assert sum(expectation(c) is not None for c in commands) >= 15
    chains = " ".join(commands)
    for needle in (
        '"chain": "anvil"',
        '"chain": "solana"',
        '"chain": "stellar"',
        '"asset": "TUSD"',
        '"asset": "USDC"',
        "temporal workflow update execute",
        "TEMPORAL_CODEC_ENDPOINT",
    ):
        assert needle in chains, needle


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """`python -m devnet.stack` (what `./dev up` runs) on free ports, until it says Ready."""
    data = tmp_path_factory.mktemp("dev-stack")
    data.chmod(0o755)  # pgserver runs PostgreSQL as its own user, who must reach the data directory
    ports = {name: local.free_port() for name in PORT_NAMES}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "TEMPORAL_"))}
    env |= {f"CUSTODY_DEV_{name}_PORT": str(port) for name, port in ports.items()}
    env["CUSTODY_DEV_DATA_DIR"] = str(data / "state")
    log = data / "stack.log"
    with open(log, "wb") as out:
        stack = subprocess.Popen(
            [sys.executable, "-m", "devnet.stack"],
            cwd=local.ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STACK_READY_SECONDS
        while "Ready." not in log.read_text(errors="replace"):
            if stack.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the dev stack did not start (exit {stack.poll()}):\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield ports
    finally:
        stack.send_signal(signal.SIGTERM)  # it stops everything it started, in reverse order
        try:
            stack.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait(10)


def test_readme_tour_runs_as_printed(dev_stack: dict[str, int], tmp_path: Path) -> None:
    commands = tour_commands(README.read_text())
    outputs = tmp_path / "out"
    outputs.mkdir()
    api = f"http://127.0.0.1:{dev_stack['API']}"
    script = [
        "set -uo pipefail",
        f"export PATH={Path(sys.executable).parent}:$PATH",
        f"export CUSTODY_API_URL={api}",
        'curl() { command curl --fail-with-body "$@"; }  # README\'s curl -s, but an HTTP error fails the command',
    ]
    for n, command in enumerate(commands):
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{dev_stack['API']}")
        command = command.replace("127.0.0.1:7233", f"127.0.0.1:{dev_stack['TEMPORAL']}")
        script.append(
            f'{{ {command}\n}} > {outputs}/{n} 2>&1 || {{ rc=$?; echo "README tour command {n} failed (exit $rc):"; cat {outputs}/{n}; exit 1; }}'
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "TEMPORAL_"))}
    run = subprocess.run(["bash", "-c", "\n".join(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TOUR_SECONDS)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- the command:\n{_failed(commands, run.stdout)}"
    for n, command in enumerate(commands):
        wanted = expectation(command)
        printed = (outputs / str(n)).read_text()
        # Whitespace aside: curl prints compact JSON, the custody CLI indented JSON.
        assert wanted is None or _squeezed(wanted) in _squeezed(printed), f"README says `{command}` prints {wanted!r}; it printed:\n{printed}"


def _squeezed(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _failed(commands: list[str], stdout: str) -> str:
    match = re.search(r"README tour command (\d+) failed", stdout)
    return commands[int(match.group(1))] if match else "?"
