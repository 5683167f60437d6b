"""`./dev up`: the whole local stack on 127.0.0.1, state kept under .data/ between runs.

PostgreSQL (pgserver's binaries, unix socket), Redis, anvil (state file), the Solana and Stellar
devnets (state directories), the Temporal dev server with its Web UI (SQLite file), then the
worker and the API: the wiring only. devnet.supervisor owns the processes: one that exits is
restarted with a backoff while the others keep running; Ctrl-C or SIGTERM stops them all, once,
in reverse order. Ports can be moved with CUSTODY_DEV_<NAME>_PORT (API, TEMPORAL, TEMPORAL_UI,
ANVIL, REDIS, SOLANA, STELLAR, WORKER_METRICS, TEMPORAL_METRICS). `--workers N` runs N worker
processes on the task queue; worker n > 1 serves its two metrics endpoints (custody's, the
Temporal SDK's) on WORKER_METRICS + 2(n - 1) and TEMPORAL_METRICS + 2(n - 1): 9466 and 9467, ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from devnet import local, services
from devnet.supervisor import ChildProcess, ServiceFailed, StopRequested, Supervisor

# CUSTODY_DEV_DATA_DIR moves the state (tests start a stack of their own this way).
DATA = Path(os.environ.get("CUSTODY_DEV_DATA_DIR") or local.ROOT / ".data")
LOGS = DATA / "logs"
TOKEN_FILE = DATA / "dev-token.json"
SOLANA_TOKEN_FILE = DATA / "solana-token.json"  # the test SPL mint and its mint authority (dev only)
STELLAR_ASSET_FILE = DATA / "stellar-asset.json"  # the test credit asset and its issuer's seed (dev only)
SOLANA_TOKEN = ("TUSD", 6)  # symbol, decimals: the same test dollar as anvil's
STELLAR_ASSET_CODE = "USDC"  # README's trustline example
DEV_API_KEY = "dev-alice-key"
STELLAR_DEVNET_PASSPHRASE = "Custody Devnet ; 2026"  # devnet.stellar's default network
ANVIL_STATE_INTERVAL = 1  # seconds between anvil's state-file writes (it otherwise writes only at a clean exit)
# A block every second, and anvil's `finalized` block two behind the head (one slot per epoch):
# COMPLETED (final, custody's default finality) comes about three seconds after the send, as on
# a real chain with fast finality, instead of never on an auto-mining node with nothing to mine.
ANVIL_BLOCK_SECONDS = 1
# The Temporal dev server's SQLite file: WAL lets readers run beside the one writer, and
# synchronous=normal drops the fsync of every commit (a crash of the machine may lose the last
# commits of the dev server's history, never corrupt the file). Measured with `python -m bench`.
TEMPORAL_SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")
DEV_APPROVAL_THRESHOLDS = '{"anvil:ETH": "1"}'


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the repository when it is inside."""
    try:
        return str(path.resolve().relative_to(local.ROOT))
    except ValueError:
        return str(path)


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"CUSTODY_DEV_{name}_PORT", default))


def _step(message: str) -> float:
    print(f"  … {message}", end="", flush=True)
    return time.monotonic()


def _done(started: float) -> None:
    print(f" ok ({time.monotonic() - started:.1f}s)", flush=True)


def _require_free(name: str, port: int) -> None:
    if local.port_open(port):
        raise SystemExit(f"port {port} for {name} is in use: is another `./dev up` running? (move it with CUSTODY_DEV_{name.upper()}_PORT)")


async def _dev_token(rpc_url: str) -> str:
    """The TUSD test token: deployed once, found again in anvil's saved state on later runs."""
    from web3 import AsyncHTTPProvider, AsyncWeb3

    if TOKEN_FILE.exists():
        address = json.loads(TOKEN_FILE.read_text())["address"]
        code = await AsyncWeb3(AsyncHTTPProvider(rpc_url)).eth.get_code(address)
        if len(code) > 0:
            return address
    address = await local.deploy_test_token(rpc_url, "Test USD", "TUSD", 6)
    TOKEN_FILE.write_text(json.dumps({"address": address, "symbol": "TUSD", "decimals": 6}))
    return address


async def _dev_solana_token(rpc_url: str) -> dict[str, str]:
    """The Solana test token: a mint made once, found again in the devnet's saved state later;
    its mint authority lets `fund` mint it (test networks only)."""
    from solders.keypair import Keypair

    if SOLANA_TOKEN_FILE.exists():
        saved = json.loads(SOLANA_TOKEN_FILE.read_text())
        if await local.solana_account_exists(rpc_url, saved["mint"]):
            return saved
    authority = str(Keypair())
    mint = await local.create_test_spl_mint(rpc_url, authority, SOLANA_TOKEN[1])
    saved = {"mint": mint, "authority": authority, "symbol": SOLANA_TOKEN[0], "decimals": str(SOLANA_TOKEN[1])}
    SOLANA_TOKEN_FILE.write_text(json.dumps(saved))
    SOLANA_TOKEN_FILE.chmod(0o600)
    return saved


async def _dev_stellar_asset(horizon_url: str) -> dict[str, str]:
    """The Stellar test credit asset (USDC:<issuer>): an issuer account made once by friendbot;
    its seed lets `fund` pay the asset to wallets that trust it (test networks only)."""
    from stellar_sdk import Keypair

    saved = json.loads(STELLAR_ASSET_FILE.read_text()) if STELLAR_ASSET_FILE.exists() else None
    if saved is None:
        issuer = Keypair.random()
        saved = {"code": STELLAR_ASSET_CODE, "issuer": issuer.public_key, "secret": issuer.secret}
        STELLAR_ASSET_FILE.write_text(json.dumps(saved))
        STELLAR_ASSET_FILE.chmod(0o600)
    await local.create_test_stellar_issuer(horizon_url, saved["secret"])  # again after a devnet reset
    return saved


async def _migrate(database_url: str) -> None:
    from db.access import seed_dev_keys
    from db.engine import create_engine, create_session_factory
    from db.migrate import upgrade

    engine = create_engine(database_url, pool_size=1)
    await upgrade(engine)
    await seed_dev_keys(create_session_factory(engine))  # development only: dev-alice-key, dev-ops-key, ...
    await engine.dispose()


def _chains(ports: dict[str, int], token: str, solana_token: dict[str, str], stellar_asset: dict[str, str]) -> dict[str, dict]:
    return {
        "anvil": {
            "family": "evm",
            "chain_id": 31337,
            "rpc_url": f"http://127.0.0.1:{ports['anvil']}",
            "native_symbol": "ETH",
            "tokens": {"TUSD": {"address": token, "decimals": 6}},
            "faucet_enabled": True,
            "fee_bump_after_seconds": 20,
        },
        "solana": {
            "family": "solana",
            "rpc_url": f"http://127.0.0.1:{ports['solana']}",
            "tokens": {solana_token["symbol"]: {"address": solana_token["mint"], "decimals": int(solana_token["decimals"])}},
            "faucet_enabled": True,
            "faucet_token_authority": solana_token["authority"],
        },
        "stellar": {
            "family": "stellar",
            "horizon_url": f"http://127.0.0.1:{ports['stellar']}",
            "network_passphrase": STELLAR_DEVNET_PASSPHRASE,
            "tokens": {stellar_asset["code"]: {"address": f"{stellar_asset['code']}:{stellar_asset['issuer']}", "decimals": 7}},
            "faucet_enabled": True,
            "faucet_token_authority": stellar_asset["secret"],
            # Friendbot creates them at worker start: `custody channels show stellar`.
            "channels": {"count": 4},
        },
    }


def _start(supervisor: Supervisor, label: str, service: ChildProcess, ready_timeout: float = 60) -> None:
    t = _step(label)
    supervisor.start(service, ready_timeout=ready_timeout)
    _done(t)


def dev_env(ports: dict[str, int], database_url: str, chains: dict[str, dict]) -> dict[str, str]:
    """The worker's and the API's environment under `./dev up` (docker-compose.yml sets the same)."""
    return services.custody_env(
        database_url=database_url,
        redis_port=ports["redis"],
        temporal_port=ports["temporal"],
        worker_metrics_port=ports["worker_metrics"],
        temporal_metrics_port=ports["temporal_metrics"],
        chains=chains,
        TEMPORAL_UI_URL=f"http://127.0.0.1:{ports['temporal_ui']}",
        # Four eyes above 1 ETH, so the tour can show a withdrawal awaiting approval.
        APPROVAL_THRESHOLDS=os.environ.get("CUSTODY_APPROVAL_THRESHOLDS", DEV_APPROVAL_THRESHOLDS),
    )


def _start_stack(supervisor: Supervisor, ports: dict[str, int], workers: int = 1) -> None:
    """Every service in dependency order, each supervised from the moment it answers."""
    pgdata = DATA / "postgres"
    _start(supervisor, "PostgreSQL 16 (pgserver)", services.postgres(pgdata, LOGS))  # the first time: initdb
    database_url = services.postgres_url(pgdata)
    _start(supervisor, f"Redis on :{ports['redis']}", services.redis(ports["redis"], DATA / "redis", LOGS))
    anvil = services.anvil(
        ports["anvil"], LOGS, state_file=DATA / "anvil-state.json", block_time=ANVIL_BLOCK_SECONDS, state_interval=ANVIL_STATE_INTERVAL
    )
    _start(supervisor, f"anvil on :{ports['anvil']}", anvil)
    _start(supervisor, f"Solana devnet (LiteSVM) on :{ports['solana']}", services.chain_devnet("solana", ports["solana"], DATA / "solana", LOGS))
    stellar = services.chain_devnet("stellar", ports["stellar"], DATA / "stellar", LOGS)
    _start(supervisor, f"Stellar devnet (Horizon API) on :{ports['stellar']}", stellar)
    t = _step("TUSD test token")
    token = asyncio.run(_dev_token(f"http://127.0.0.1:{ports['anvil']}"))
    _done(t)
    t = _step("Solana TUSD test mint")
    solana_token = asyncio.run(_dev_solana_token(f"http://127.0.0.1:{ports['solana']}"))
    _done(t)
    t = _step("Stellar USDC test asset")
    stellar_asset = asyncio.run(_dev_stellar_asset(f"http://127.0.0.1:{ports['stellar']}"))
    _done(t)
    supervisor.raise_if_stopping()
    temporal = services.temporal(
        ports["temporal"],
        ports["temporal_ui"],
        DATA / "temporal.db",
        LOGS,
        sqlite_pragmas=TEMPORAL_SQLITE_PRAGMAS,
        ui_codec_endpoint=f"http://127.0.0.1:{ports['api']}/codec",
    )
    _start(supervisor, f"Temporal dev server on :{ports['temporal']} with Web UI on :{ports['temporal_ui']}", temporal, ready_timeout=90)
    t = _step("database migrations")
    asyncio.run(_migrate(database_url))
    _done(t)
    supervisor.raise_if_stopping()

    env = dev_env(ports, database_url, _chains(ports, token, solana_token, stellar_asset))
    for number in range(1, workers + 1):
        worker_env = env if number == 1 else services.nth_worker_env(env, ports[f"worker_metrics_{number}"], ports[f"temporal_metrics_{number}"])
        label = "worker" if workers == 1 else f"worker {number} of {workers}"
        _start(supervisor, label, services.worker(worker_env, LOGS, stop_timeout=30, number=number))  # lets running activities finish
    _start(supervisor, f"API on :{ports['api']}", services.api(ports["api"], env, LOGS))

    api_url = f"http://127.0.0.1:{ports['api']}"
    print(
        f"\nReady.\n"
        f"  API docs     {api_url}/docs\n"
        f"  Temporal UI  http://127.0.0.1:{ports['temporal_ui']}/namespaces/default/workflows\n"
        f"  anvil RPC    http://127.0.0.1:{ports['anvil']}   (TUSD token {token})\n"
        f"  Solana RPC   http://127.0.0.1:{ports['solana']}   (LiteSVM devnet; TUSD mint {solana_token['mint']})\n"
        f"  Horizon      http://127.0.0.1:{ports['stellar']}   (Stellar devnet; USDC issuer {stellar_asset['issuer']})\n"
        f"  Dev API key  Authorization: Bearer {DEV_API_KEY}   (bob: dev-bob-key)\n"
        f"  Logs         {_shown(LOGS)}/*.log\n\n"
        f"A process that exits is restarted (a line here says so). Press Ctrl-C to stop.",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="./dev up", description="Start the whole local stack.")
    parser.add_argument("--workers", type=int, default=1, help="worker processes on the task queue (default 1)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers needs at least 1")
    ports = {
        "api": _port("API", 8000),
        "temporal": _port("TEMPORAL", 7233),
        "temporal_ui": _port("TEMPORAL_UI", 8233),
        "anvil": _port("ANVIL", 8545),
        "redis": _port("REDIS", 6379),
        "solana": _port("SOLANA", 8899),
        "stellar": _port("STELLAR", 8001),
        "worker_metrics": _port("WORKER_METRICS", 9464),
        "temporal_metrics": _port("TEMPORAL_METRICS", 9465),
    }
    for n in range(2, args.workers + 1):  # worker n's two metrics ports, after the first worker's
        ports[f"worker_metrics_{n}"] = ports["worker_metrics"] + 2 * (n - 1)
        ports[f"temporal_metrics_{n}"] = ports["temporal_metrics"] + 2 * (n - 1)
    for name, port in ports.items():
        _require_free(name, port)
    DATA.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor()
    supervisor.install_signal_handlers()
    failed = False
    print(f"custody dev stack (data in {_shown(DATA)}/, logs in {_shown(LOGS)}/)")
    try:
        _start_stack(supervisor, ports, args.workers)
        supervisor.run()
    except StopRequested:
        pass
    except ServiceFailed as exc:
        failed = True
        print(f"\n{exc}", flush=True)
    finally:
        print("\nstopping…", flush=True)
        supervisor.stop_all()
        supervisor.close()
        print("stopped.", flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
