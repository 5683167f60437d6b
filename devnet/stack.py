"""`./dev up`: the whole local stack on 127.0.0.1, state kept under .data/ between runs.

PostgreSQL (pgserver, unix socket), Redis, anvil (state file), the Temporal dev server with its
Web UI (SQLite file), then the worker and the API. Ctrl-C stops everything in reverse order.
Ports can be moved with CUSTODY_DEV_<NAME>_PORT (API, TEMPORAL, TEMPORAL_UI, ANVIL, REDIS).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from devnet import local
from models import search_attributes

DATA = local.ROOT / ".data"
LOGS = DATA / "logs"
TOKEN_FILE = DATA / "dev-token.json"
DEV_API_KEY = "dev-alice-key"
STELLAR_DEVNET_PASSPHRASE = "Custody Devnet ; 2026"  # devnet.stellar's default network


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"CUSTODY_DEV_{name}_PORT", default))


def _step(message: str) -> float:
    print(f"  … {message}", end="", flush=True)
    return time.monotonic()


def _done(started: float) -> None:
    print(f" ok ({time.monotonic() - started:.1f}s)", flush=True)


def _require_free(name: str, port: int) -> None:
    if local.port_open(port):
        raise SystemExit(
            f"port {port} for {name} is in use: is another `./dev up` running? "
            f"(move it with CUSTODY_DEV_{name.upper()}_PORT)"
        )


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


async def _migrate(database_url: str) -> None:
    from db.access import seed_dev_keys
    from db.engine import create_engine, create_session_factory
    from db.migrate import upgrade

    engine = create_engine(database_url, pool_size=1)
    await upgrade(engine)
    await seed_dev_keys(create_session_factory(engine))  # development only: dev-alice-key, dev-ops-key, ...
    await engine.dispose()


def main() -> None:
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
    for name, port in ports.items():
        _require_free(name, port)
    DATA.mkdir(exist_ok=True)
    started: list[local.ManagedProcess] = []
    postgres = None
    print("custody dev stack (data in .data/, logs in .data/logs/)")
    try:
        t = _step("PostgreSQL 16 (pgserver)")
        postgres, database_url = local.start_postgres(DATA / "postgres")
        _done(t)
        t = _step(f"Redis on :{ports['redis']}")
        redis = local.start_redis(ports["redis"], DATA / "redis", LOGS)
        started.append(redis)
        _done(t)
        t = _step(f"anvil on :{ports['anvil']}")
        anvil = local.start_anvil(ports["anvil"], LOGS, state_file=DATA / "anvil-state.json")
        started.append(anvil)
        _done(t)
        t = _step(f"Solana devnet (LiteSVM) on :{ports['solana']}")
        solana = local.spawn(
            "solana-devnet",
            [sys.executable, "-m", "devnet.solana", "--host", "127.0.0.1", "--port", str(ports["solana"]), "--log-level", "warning"],
            LOGS, lambda: local.port_open(ports["solana"]),
        )
        started.append(solana)
        _done(t)
        t = _step(f"Stellar devnet (Horizon API) on :{ports['stellar']}")
        stellar = local.spawn(
            "stellar-devnet",
            [sys.executable, "-m", "devnet.stellar", "--host", "127.0.0.1", "--port", str(ports["stellar"]), "--log-level", "warning"],
            LOGS, lambda: local.port_open(ports["stellar"]),
        )
        started.append(stellar)
        _done(t)
        t = _step("TUSD test token")
        token = asyncio.run(_dev_token(anvil.info["rpc_url"]))
        _done(t)
        t = _step(f"Temporal dev server on :{ports['temporal']} with Web UI on :{ports['temporal_ui']}")
        temporal = local.start_temporal(
            ports["temporal"],
            ports["temporal_ui"],
            DATA / "temporal.db",
            LOGS,
            {key.name: kind for key, kind in search_attributes.KINDS.items()},
            ui_codec_endpoint=f"http://127.0.0.1:{ports['api']}/codec",
        )
        started.append(temporal)
        _done(t)
        t = _step("database migrations")
        asyncio.run(_migrate(database_url))
        _done(t)

        env = {
            **os.environ,
            "CUSTODY_ENVIRONMENT": "development",
            "CUSTODY_DATABASE_URL": database_url,
            "CUSTODY_REDIS_URL": redis.info["url"],
            "CUSTODY_TEMPORAL_ADDRESS": temporal.info["address"],
            "CUSTODY_TEMPORAL_UI_URL": temporal.info["ui_url"],
            "CUSTODY_WORKER_METRICS_PORT": str(ports["worker_metrics"]),
            "CUSTODY_TEMPORAL_METRICS_PORT": str(ports["temporal_metrics"]),
            "CUSTODY_CHAINS": json.dumps(
                {
                    "anvil": {
                        "family": "evm",
                        "chain_id": 31337,
                        "rpc_url": anvil.info["rpc_url"],
                        "native_symbol": "ETH",
                        "tokens": {"TUSD": {"address": token, "decimals": 6}},
                        "faucet_enabled": True,
                        "fee_bump_after_seconds": 20,
                    },
                    "solana": {
                        "family": "solana",
                        "rpc_url": f"http://127.0.0.1:{ports['solana']}",
                        "faucet_enabled": True,
                    },
                    "stellar": {
                        "family": "stellar",
                        "horizon_url": f"http://127.0.0.1:{ports['stellar']}",
                        "network_passphrase": STELLAR_DEVNET_PASSPHRASE,
                        "faucet_enabled": True,
                        # Friendbot creates them at worker start: `custody channels show stellar`.
                        "channels": {"count": 4},
                    },
                }
            ),
        }
        t = _step("worker")
        worker = local.spawn(
            "worker", [sys.executable, "worker.py"], LOGS,
            lambda: local.port_open(ports["worker_metrics"]), env=env,
        )
        started.append(worker)
        _done(t)
        t = _step(f"API on :{ports['api']}")
        api = local.spawn(
            "api",
            [sys.executable, "-m", "uvicorn", "api.main:app_from_env", "--factory",
             "--host", "127.0.0.1", "--port", str(ports["api"]), "--no-access-log"],
            LOGS, lambda: local.port_open(ports["api"]), env=env,
        )
        started.append(api)
        _done(t)

        api_url = f"http://127.0.0.1:{ports['api']}"
        print(
            f"\nReady.\n"
            f"  API docs     {api_url}/docs\n"
            f"  Temporal UI  {temporal.info['ui_url']}/namespaces/default/workflows\n"
            f"  anvil RPC    {anvil.info['rpc_url']}   (TUSD token {token})\n"
            f"  Solana RPC   http://127.0.0.1:{ports['solana']}   (LiteSVM devnet; state is in memory)\n"
            f"  Horizon      http://127.0.0.1:{ports['stellar']}   (Stellar devnet; state is in memory)\n"
            f"  Dev API key  Authorization: Bearer {DEV_API_KEY}   (bob: dev-bob-key)\n"
            f"  Logs         .data/logs/*.log\n\n"
            f"Press Ctrl-C to stop.",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while True:
            for proc in started:
                if proc.process.poll() is not None:
                    raise SystemExit(f"{proc.name} exited with {proc.process.returncode}:\n{proc.tail()}")
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
    finally:
        for proc in reversed(started):
            proc.stop()
        if postgres is not None:
            postgres.cleanup()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
