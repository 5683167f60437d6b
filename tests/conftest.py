"""Session-wide real servers (one set per xdist worker): Temporal dev server, PostgreSQL,
Redis, anvil and the local AWS and Google Cloud KMS; each test gets its own task queue, worker
and API app on top of them. The Solana and Stellar devnets are one per module (a module's tests
share a ledger; several modules start theirs with other settings). A server that does not start
fails its fixture with its name, its command and where its log is (`started`)."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from solana.rpc.async_api import AsyncClient as SolanaClient
from solana.rpc.commitment import Confirmed
from solana.rpc.models import TxOpts
from solders.keypair import Keypair as SolanaKeypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction
from spl.token.constants import TOKEN_PROGRAM_ID
from spl.token.instructions import initialize_mint2
from spl.token.models import InitializeMint2Params
from stellar_sdk import Keypair as StellarKeypair
from stellar_sdk import ServerAsync
from stellar_sdk.client.aiohttp_client import AiohttpClient
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.identity import Role
from core.settings import EvmChainSettings, RateLimitSettings, Settings, TokenSettings
from core.temporal import client_over
from db.engine import SessionFactory, create_engine, create_session_factory
from db.migrate import upgrade
from devnet import local
from devnet.solana import SolanaDevnet, run_solana_devnet
from devnet.stellar import StellarDevnet, run_stellar_devnet
from models import search_attributes

if TYPE_CHECKING:
    from devnet.gcp_kms.server import GcpKmsServer

ALICE = {"Authorization": "Bearer dev-alice-key"}
BOB = {"Authorization": "Bearer dev-bob-key"}
OPS = {"Authorization": "Bearer dev-ops-key"}
ADMIN = {"Authorization": "Bearer dev-admin-key"}
TOKEN_DECIMALS = 6


@contextmanager
def started(server: str, command: str, log: str | Path) -> Iterator[None]:
    """A server that fails to start fails its fixture saying which server, how it was started and
    where to read why, not with the launcher's bare exception."""
    try:
        yield
    except Exception as exc:
        raise RuntimeError(f"{server} did not start.\n  command: {command}\n  log: {log}\n  error: {exc}") from exc


@pytest.fixture(scope="session")
def tmp_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    temporal = local.temporal_path()  # not found: says which variable or ./dev provides it
    command = f"{temporal} server start-dev --ip 127.0.0.1 (temporalio's WorkflowEnvironment.start_local)"
    with started("Temporal dev server", command, "none: the dev server writes to this pytest's stderr (log level error)"):
        env = await WorkflowEnvironment.start_local(
            ip="127.0.0.1",
            dev_server_existing_path=temporal,
            search_attributes=list(search_attributes.ALL),
            dev_server_log_level="error",
            dev_server_extra_args=local.temporal_dynamic_config_args(),  # as ./dev up runs it
        )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def postgres_url():  # type: ignore[no-untyped-def]
    # Not under pytest's 0700 tmp tree: pgserver runs postgres as its own unprivileged user.
    data_dir = Path(tempfile.mkdtemp(prefix="custody-pg-"))
    data_dir.chmod(0o755)
    with started("PostgreSQL (pgserver)", f"pg_ctl -D {data_dir / 'pg'} -w start (pgserver.get_server)", data_dir / "pg" / "log"):
        server, url = local.start_postgres(data_dir / "pg")
    yield url
    server.cleanup()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_session: Path):  # type: ignore[no-untyped-def]
    port = local.free_port()
    with started("Redis", shlex.join(local.redis_argv(port, tmp_session / "redis")), tmp_session / "logs" / "redis.log"):
        proc = local.start_redis(port, tmp_session / "redis", tmp_session / "logs")
    yield proc.info["url"]
    proc.stop()


@pytest.fixture(scope="session")
def aws_server():  # type: ignore[no-untyped-def]
    """The local AWS KMS (moto server mode + custody's extension), reached by the real boto3."""
    from devnet.aws_kms import run_aws_kms

    with pytest.MonkeyPatch.context() as mp:  # boto3's credential chain reads these; the server takes any
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.delenv("AWS_PROFILE", raising=False)
        with ExitStack() as stack:
            with started(
                "AWS KMS (moto server)", "devnet.aws_kms.run_aws_kms(port=0), in this process", "none: in process, see this pytest's output"
            ):
                srv = stack.enter_context(run_aws_kms(host="127.0.0.1", port=0))
            yield srv


@pytest.fixture(scope="session")
async def gcp_server() -> AsyncIterator[GcpKmsServer]:
    """The local Google Cloud KMS (gRPC, devnet/gcp_kms), reached by the real google-cloud-kms client."""
    from devnet.gcp_kms import run_gcp_kms

    async with AsyncExitStack() as stack:
        with started(
            "Google Cloud KMS (devnet.gcp_kms)", "devnet.gcp_kms.run_gcp_kms(port=0), in this process", "none: in process, see this pytest's output"
        ):
            srv = await stack.enter_async_context(run_gcp_kms(host="127.0.0.1", port=0))
        yield srv


@pytest.fixture(scope="session")
def anvil(tmp_session: Path):  # type: ignore[no-untyped-def]
    port = local.free_port()
    with started("anvil", shlex.join(local.anvil_argv(port)), tmp_session / "logs" / "anvil.log"):
        proc = local.start_anvil(port, tmp_session / "logs")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
async def token_address(anvil: local.ManagedProcess) -> str:
    return await local.deploy_test_token(anvil.info["rpc_url"], "Test USD", "TUSD", TOKEN_DECIMALS)


@pytest.fixture(scope="session")
async def base_settings(
    postgres_url: str, redis_url: str, anvil: local.ManagedProcess, token_address: str, temporal_env: WorkflowEnvironment
) -> Settings:
    return Settings(
        environment="test",
        log_json=False,
        database_url=postgres_url,
        redis_url=redis_url,
        temporal_address=temporal_env.client.service_client.config.target_host,
        worker_shutdown_grace_seconds=1,  # a test's worker stops at its end; pollers need not drain long
        # The whole session shares a few identities and one Redis: limits sized for production
        # would throttle the suite (tests/api/test_access_edge.py tests the limits themselves).
        rate_limits=RateLimitSettings(
            per_identity="1000000/minute", per_ip="1000000/minute", wallet_creation="1000000/hour", failed_auth="1000000/minute"
        ),
        chains={
            "anvil": EvmChainSettings(
                chain_id=31337,
                rpc_url=anvil.info["rpc_url"],
                tokens={"TUSD": TokenSettings(address=token_address, decimals=TOKEN_DECIMALS)},
                faucet_enabled=True,
                poll_interval_seconds=0.2,
                fee_bump_after_seconds=30,
                # The suite's anvil mines one block per transaction and never reorgs: one block
                # deep is final here (the finalized default is tested on its own anvil).
                finality="depth",
                confirmations=1,
            )
        },
    )


@pytest.fixture(scope="session")
async def sessions(base_settings: Settings) -> AsyncIterator[SessionFactory]:
    from db.access import seed_dev_keys

    engine = create_engine(base_settings.database_url)
    await upgrade(engine)
    factory = create_session_factory(engine)
    await seed_dev_keys(factory)  # the suite authenticates with the development keys
    yield factory
    await engine.dispose()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(base_settings: Settings, task_queue: str) -> Settings:
    return base_settings.model_copy(update={"task_queue": task_queue})


@pytest.fixture
def client(temporal_env: WorkflowEnvironment, base_settings: Settings) -> Client:
    """A client with custody's payload encryption, like the worker's and the API's."""
    return client_over(temporal_env.client.service_client, base_settings)


@pytest.fixture
async def worker(client: Client, settings: Settings, sessions: SessionFactory) -> AsyncIterator[Worker]:
    from worker import build_worker

    w = build_worker(client, settings, sessions)
    async with w:
        yield w


@pytest.fixture
def paused_anvil(tmp_path: Path):  # type: ignore[no-untyped-def]
    """An anvil of the test's own, for tests that stop its mining or reorganize it."""
    port = local.free_port()
    with started("anvil (the test's own)", shlex.join(local.anvil_argv(port)), tmp_path / "anvil.log"):
        proc = local.start_anvil(port, tmp_path)
    yield proc
    proc.stop()


@asynccontextmanager
async def mining_paused(
    base_settings: Settings,
    task_queue: str,
    client: Client,
    sessions: SessionFactory,
    anvil: local.ManagedProcess,
    bump_after: float,
    custody_rpc: str | None = None,
    **chain_settings: object,
) -> AsyncIterator[tuple[httpx.AsyncClient, object, dict]]:
    """A worker and API on their own anvil whose automatic mining is off, and a funded wallet
    (1 ETH): transactions wait in the mempool until the test mines. `chain_settings` override the
    anvil chain's (e.g. a fee cap); `settings` keys prefixed `settings__` override the stack's.
    `custody_rpc`: the URL custody uses (e.g. a fault proxy in front of the same anvil)."""
    from web3 import AsyncHTTPProvider, AsyncWeb3

    from worker import build_worker

    rpc = anvil.info["rpc_url"]
    overrides = {k.removeprefix("settings__"): v for k, v in chain_settings.items() if k.startswith("settings__")}
    fields = {k: v for k, v in chain_settings.items() if not k.startswith("settings__")}
    chain = EvmChainSettings(
        chain_id=31337,
        rpc_url=custody_rpc or rpc,
        poll_interval_seconds=0.2,
        fee_bump_after_seconds=bump_after,
        finality="depth",
        confirmations=1,
        **fields,  # type: ignore[arg-type]
    )
    settings = base_settings.model_copy(update={"task_queue": task_queue, "chains": {"anvil": chain}, **overrides})
    web3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    async with build_worker(client, settings, sessions), api_client(settings, client) as api:
        wallet = await create_wallet(api)
        await web3.provider.make_request("anvil_setBalance", [wallet["address"], hex(10**18)])
        await web3.provider.make_request("evm_setAutomine", [False])
        yield api, web3, wallet


@asynccontextmanager
async def api_client(settings: Settings, client: Client) -> AsyncIterator[httpx.AsyncClient]:
    """The API app in-process (lifespan included), reached over ASGI by httpx."""
    from api.main import create_app

    app = create_app(settings, temporal=client)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://custody.test", timeout=60) as http:
            yield http


@pytest.fixture
async def api(settings: Settings, client: Client, sessions: SessionFactory, worker: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """The API with a worker on the test's own task queue behind it."""
    async with api_client(settings, client) as http:
        yield http


@dataclass
class Funded:
    wallet: dict
    headers: dict[str, str]


async def create_wallet(api: httpx.AsyncClient, headers: dict[str, str] = ALICE, label: str | None = None) -> dict:
    response = await api.post("/v1/wallets", json={"chain": "anvil", "label": label or f"w-{uuid.uuid4().hex[:8]}"}, headers=headers)
    assert response.status_code in (201, 202), response.text
    wallet = response.json()
    # 202: the key is still being made (a slow KMS under load); the API says so and we wait.
    for _ in range(300):
        if wallet["status"] != "CREATING":
            break
        await asyncio.sleep(0.1)
        wallet = (await api.get(f"/v1/wallets/{wallet['id']}", headers=headers)).json()
    assert wallet["status"] == "ACTIVE" and wallet["address"].startswith("0x"), wallet
    return wallet


async def fund(api: httpx.AsyncClient, wallet: dict, amount: str, asset: str | None = None, headers: dict = ALICE) -> None:
    body = {"amount": amount} | ({"asset": asset} if asset else {})
    response = await api.post(f"/v1/wallets/{wallet['id']}/fund", json=body, headers=headers)
    assert response.status_code == 200, response.text


async def wait_for_status(api: httpx.AsyncClient, withdrawal_id: str, statuses: set[str], headers: dict = ALICE, timeout: float = 60) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await api.get(f"/v1/withdrawals/{withdrawal_id}", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in statuses:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"withdrawal stuck in {body['status']}: {body}")
        await asyncio.sleep(0.2)


async def withdraw(
    api: httpx.AsyncClient,
    wallet: dict,
    to: str,
    amount: str,
    asset: str = "ETH",
    headers: dict = ALICE,
    key: str | None = None,
) -> httpx.Response:
    return await api.post(
        "/v1/withdrawals",
        json={"wallet_id": wallet["id"], "to": to, "asset": asset, "amount": amount},
        headers={**headers, "Idempotency-Key": key or uuid.uuid4().hex},
    )


def random_address() -> str:
    from eth_account import Account

    return Account.create().address


async def new_identity(sessions, *roles: Role, **key_options) -> tuple[dict[str, str], str]:  # type: ignore[no-untyped-def]
    """A fresh user with these roles and an API key of theirs: (headers, user id)."""
    from db.access import create_api_key, upsert_user

    user_id = f"u-{uuid.uuid4().hex[:10]}"
    async with sessions() as session, session.begin():
        await upsert_user(session, user_id, [r.value for r in roles])
        _, key = await create_api_key(session, owner=user_id, name="test", created_by="test", **key_options)
    return {"Authorization": f"Bearer {key}"}, user_id


@pytest.fixture
async def policy_put_back(sessions: SessionFactory) -> AsyncIterator[None]:
    """The policy is global: a test that changes it (`pytestmark = pytest.mark.usefixtures(
    "policy_put_back")`) leaves it as it found it (a new version with the old document)."""
    from db import policy as store

    async with sessions() as session:
        _, before = await store.current(session)
    yield
    async with sessions() as session, session.begin():
        await store.publish(session, before, author="test", summary="put back after a test")


HISTORIES = Path(__file__).parent / "histories"


async def replay_and_record(client: Client, workflow_id: str, name: str, run_id: str | None = None) -> None:
    """Replay a finished run's history against the current code (fails on non-determinism) and,
    with CUSTODY_RECORD_HISTORIES=1, save it as tests/histories/<name>.json if not saved yet:
    tests/workflows/test_replay.py then replays it against every later version of the code."""
    from temporalio.worker import Replayer

    from core.temporal import custody_data_converter
    from worker import WORKFLOWS

    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    await Replayer(workflows=list(WORKFLOWS), data_converter=custody_data_converter(Settings())).replay_workflow(history)
    target = HISTORIES / f"{name}.json"
    if os.environ.get("CUSTODY_RECORD_HISTORIES") == "1" and not target.exists():
        target.write_text(history.to_json())


os.environ.setdefault("CUSTODY_LOG_JSON", "false")


def worker_process(settings: Settings, chaos_after: str | None = None) -> subprocess.Popen:  # type: ignore[type-arg]
    """A real worker process (python worker.py) on `settings`; with `chaos_after`, it exits
    right after that activity's side effects commit, before Temporal hears of it."""
    env = {
        **os.environ,
        "CUSTODY_ENVIRONMENT": "test",
        "CUSTODY_DATABASE_URL": settings.database_url,
        "CUSTODY_REDIS_URL": settings.redis_url,
        "CUSTODY_TEMPORAL_ADDRESS": settings.temporal_address,
        "CUSTODY_TASK_QUEUE": settings.task_queue,
        "CUSTODY_WORKER_METRICS_PORT": "0",
        "CUSTODY_TEMPORAL_METRICS_PORT": "0",
        "CUSTODY_CHAINS": json.dumps({name: c.model_dump() for name, c in settings.chains.items()}),
        "CUSTODY_POOLS": json.dumps({name: p.model_dump() for name, p in settings.pools.items()}),
        "CUSTODY_WORKER_SHUTDOWN_GRACE_SECONDS": str(settings.worker_shutdown_grace_seconds),
        "CUSTODY_SIGNER_BACKEND": settings.signer_backend,
        "CUSTODY_AWS_KMS": settings.aws_kms.model_dump_json(),
        "CUSTODY_GCP_KMS": settings.gcp_kms.model_dump_json(),
    }
    env.pop("CUSTODY_CHAOS_EXIT_AFTER_ACTIVITY", None)
    if chaos_after:
        env["CUSTODY_CHAOS_EXIT_AFTER_ACTIVITY"] = chaos_after
    return subprocess.Popen([sys.executable, "worker.py"], cwd=local.ROOT, env=env)


async def until(check, timeout: float = 60, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Await `check()` until it returns something truthy (returned), or fail after `timeout` s."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_exit(process: subprocess.Popen, timeout: float) -> int:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the chaos worker did not exit")
        await asyncio.sleep(0.2)
    return process.returncode


@asynccontextmanager
async def serve_api(settings: Settings, client: Client) -> AsyncIterator[str]:
    """The API app served by a real uvicorn on a free port of this event loop; yields its base URL."""
    from api.main import create_app

    async with serve_app(create_app(settings, temporal=client)) as url:
        yield url


@asynccontextmanager
async def serve_app(app, port: int | None = None) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """An ASGI app served by a real uvicorn on a free port (or `port`) of this event loop; yields its base URL."""
    import uvicorn

    port = port or local.free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():  # uvicorn gave up (port taken, app failed to start): say why
                task.result()
                raise RuntimeError(f"uvicorn exited before serving the API on 127.0.0.1:{port}")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def api_url(settings: Settings, client: Client, worker: Worker) -> AsyncIterator[str]:
    """The API over HTTP (uvicorn), with a worker on the test's task queue behind it."""
    async with serve_api(settings, client) as url:
        yield url


async def custody(api_url: str, *args: str, key: str = "dev-alice-key", temporal: str = "") -> tuple[int, str, str]:
    """The `custody` CLI as a subprocess against `api_url`: (exit code, stdout, stderr)."""
    env = {**os.environ, "CUSTODY_API_URL": api_url, "CUSTODY_API_KEY": key, "CUSTODY_TEMPORAL_ADDRESS": temporal}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        cwd=local.ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


# ----------------------------------------------------------------------------- Solana devnet (one per module)

SOL = 1_000_000_000


@pytest.fixture(scope="module")
async def solana_devnet() -> AsyncIterator[SolanaDevnet]:
    """The project's Solana JSON-RPC devnet (LiteSVM), in this process, 100 ms slots."""
    async with AsyncExitStack() as stack:
        with started(
            "Solana devnet", "devnet.solana.run_solana_devnet(port=0, slot_ms=100), in this process", "none: in process, see this pytest's output"
        ):
            d = await stack.enter_async_context(run_solana_devnet(host="127.0.0.1", port=0, slot_ms=100))
        yield d


@pytest.fixture(scope="module")
async def rpc(solana_devnet: SolanaDevnet) -> AsyncIterator[SolanaClient]:
    async with SolanaClient(solana_devnet.url, commitment=Confirmed) as c:
        yield c


async def send_signed(rpc: SolanaClient, payer: SolanaKeypair, instructions, extra=()) -> None:  # type: ignore[no-untyped-def]
    recent = (await rpc.get_latest_blockhash(Confirmed)).value.blockhash
    tx = Transaction.new_signed_with_payer(instructions, payer.pubkey(), [payer, *extra], recent)
    await rpc.send_transaction(tx, TxOpts(preflight_commitment=Confirmed))


@pytest.fixture(scope="module")
async def mint_authority(rpc: SolanaClient) -> SolanaKeypair:
    authority = SolanaKeypair()
    await rpc.request_airdrop(authority.pubkey(), 100 * SOL)
    return authority


@pytest.fixture(scope="module")
async def mint(rpc: SolanaClient, mint_authority: SolanaKeypair) -> Pubkey:
    """A classic SPL Token mint made with the devnet's own SPL program."""
    mint = SolanaKeypair()
    rent = (await rpc.get_minimum_balance_for_rent_exemption(82)).value
    await send_signed(
        rpc,
        mint_authority,
        [
            create_account(
                CreateAccountParams(
                    from_pubkey=mint_authority.pubkey(),
                    to_pubkey=mint.pubkey(),
                    lamports=rent,
                    space=82,
                    owner=TOKEN_PROGRAM_ID,
                )
            ),
            initialize_mint2(
                InitializeMint2Params(
                    decimals=TOKEN_DECIMALS,
                    program_id=TOKEN_PROGRAM_ID,
                    mint=mint.pubkey(),
                    mint_authority=mint_authority.pubkey(),
                )
            ),
        ],
        (mint,),
    )
    return mint.pubkey()


# ----------------------------------------------------------------------------- Stellar devnet (one per module)

STELLAR_ISSUER = StellarKeypair.random()  # funded by friendbot on every `stellar_devnet`; issues USDX


@pytest.fixture(scope="module")
async def stellar_devnet() -> AsyncIterator[StellarDevnet]:
    """The project's Horizon-compatible devnet, in this process, with STELLAR_ISSUER funded."""
    # A transaction stellar-core answers TRY_AGAIN_LATER is held by Horizon until its timeout
    # (then 504); keep that short here so collisions cost seconds, not half a minute.
    async with AsyncExitStack() as stack:
        command = "devnet.stellar.run_stellar_devnet(port=0, close_interval_ms=100, submission_timeout=3), in this process"
        with started("Stellar devnet", command, "none: in process, see this pytest's output"):
            d = await stack.enter_async_context(run_stellar_devnet(port=0, close_interval_ms=100, submission_timeout=3))
        async with httpx.AsyncClient(timeout=30) as http:
            r = await http.get(d.friendbot_url, params={"addr": STELLAR_ISSUER.public_key})
            assert r.status_code == 200, r.text
        yield d


@pytest.fixture(scope="module")
async def horizon(stellar_devnet: StellarDevnet) -> AsyncIterator[ServerAsync]:
    async with ServerAsync(stellar_devnet.url, client=AiohttpClient()) as s:
        yield s
