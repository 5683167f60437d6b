"""The chaos run's own stack, every part a separate process on 127.0.0.1, as `./dev up` runs it:
PostgreSQL (a kept data directory), Redis, anvil (1 s blocks, one slot per epoch so its
`finalized` block trails the head by two), the Solana and Stellar devnets, the Temporal dev
server with a database file (a restart keeps every workflow), a wire fault proxy in front of
each node (custody only ever talks to the proxies), two workers and the API; optionally the
AWS KMS devnet. Ports and files stay the same for the whole run, so a killed part comes back
where the others expect it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from chaos.postgres import ChaosPostgres
from chaos.service import Service
from core.settings import (
    ChannelSettings,
    EvmChainSettings,
    SolanaChainSettings,
    StellarChainSettings,
    TokenSettings,
)
from devnet import local
from models import search_attributes

STELLAR_PASSPHRASE = "Custody Devnet ; 2026"  # devnet.stellar's default network
TASK_QUEUE = "chaos"
TOKEN_DECIMALS = 6
SOLANA_SLOT_MS = 100  # finalized = 32 slots back: ~3 s; a blockhash lives ~15 s
STELLAR_CLOSE_MS = 250
# Stellar channel accounts: with all of them leased a wallet is its own transaction source and
# its payments queue one per ledger, so enough for the payments in flight at once.
CHANNELS = 48


@dataclass
class Ports:
    anvil: int = field(default_factory=local.free_port)
    solana: int = field(default_factory=local.free_port)
    stellar: int = field(default_factory=local.free_port)
    anvil_proxy: int = field(default_factory=local.free_port)
    solana_proxy: int = field(default_factory=local.free_port)
    stellar_proxy: int = field(default_factory=local.free_port)
    redis: int = field(default_factory=local.free_port)
    temporal: int = field(default_factory=local.free_port)
    api: int = field(default_factory=local.free_port)
    kms: int = field(default_factory=local.free_port)
    workers: tuple[int, int] = field(default_factory=lambda: (local.free_port(), local.free_port()))


class ChaosStack:
    def __init__(self, work_dir: Path, seed: int, *, kms: bool = False) -> None:
        self.work_dir = work_dir
        self.logs = work_dir / "logs"
        self.seed = seed
        self.ports = Ports()
        self.kms_enabled = kms
        self.postgres = ChaosPostgres(work_dir / "pg")
        self.token_address = ""  # the TUSD ERC-20 on anvil
        self.spl_mint = ""  # the TUSD SPL mint on the Solana devnet
        self.signer_backend = "local"
        py = sys.executable
        p = self.ports
        self.redis = Service(
            "redis",
            [
                local.redis_server_path(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(p.redis),
                "--dir",
                str(work_dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            self.logs,
            lambda: local.port_open(p.redis),
        )
        self.anvil = Service(
            "anvil",
            [
                local.anvil_path(),
                "--host",
                "127.0.0.1",
                "--port",
                str(p.anvil),
                "--chain-id",
                "31337",
                "--silent",
                "--block-time",
                "1",
                "--slots-in-an-epoch",
                "1",
            ],
            self.logs,
            lambda: local.port_open(p.anvil),
        )
        self.solana = Service(
            "solana-devnet",
            [
                py,
                "-m",
                "devnet.solana",
                "--host",
                "127.0.0.1",
                "--port",
                str(p.solana),
                "--ledger-slot-ms",
                str(SOLANA_SLOT_MS),
                "--log-level",
                "warning",
            ],
            self.logs,
            lambda: local.port_open(p.solana),
        )
        self.stellar = Service(
            "stellar-devnet",
            [
                py,
                "-m",
                "devnet.stellar",
                "--host",
                "127.0.0.1",
                "--port",
                str(p.stellar),
                "--close-interval-ms",
                str(STELLAR_CLOSE_MS),
                "--log-level",
                "warning",
            ],
            self.logs,
            lambda: local.port_open(p.stellar),
        )
        self.temporal = Service(
            "temporal",
            [
                local.temporal_path(),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(p.temporal),
                "--headless",
                "--db-filename",
                str(work_dir / "temporal.db"),
                "--log-level",
                "error",
                *local.temporal_dynamic_config_args(),
                *[a for key, kind in search_attributes.KINDS.items() for a in ("--search-attribute", f"{key.name}={kind}")],
            ],
            self.logs,
            lambda: local.port_open(p.temporal),
        )
        self.proxies = {
            chain: Service(
                f"proxy-{chain}",
                [py, "-m", "devnet.faultproxy", "--target", f"http://127.0.0.1:{target}", "--port", str(port), "--seed", str(seed * 10 + i)],
                self.logs,
                lambda port=port: local.port_open(port),  # type: ignore[misc]
            )
            for i, (chain, target, port) in enumerate(
                [("anvil", p.anvil, p.anvil_proxy), ("solana", p.solana, p.solana_proxy), ("stellar", p.stellar, p.stellar_proxy)]
            )
        }
        self.kms = Service(
            "aws-kms",
            [py, "-m", "devnet.aws_kms", "--host", "127.0.0.1", "--port", str(p.kms)],
            self.logs,
            lambda: local.port_open(p.kms),
        )
        self.workers = [
            Service(f"worker-{i + 1}", [py, "worker.py"], self.logs, lambda port=port: local.port_open(port))  # type: ignore[misc]
            for i, port in enumerate(p.workers)
        ]
        self.api = Service(
            "api",
            [
                py,
                "-m",
                "uvicorn",
                "api.main:app_from_env",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(p.api),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            self.logs,
            lambda: local.port_open(p.api),
        )

    # --- addresses -------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.api}"

    def node_url(self, chain: str) -> str:
        """The real node, for the harness's own reads (never faulted)."""
        return f"http://127.0.0.1:{getattr(self.ports, chain)}"

    def proxy_url(self, chain: str) -> str:
        return f"http://127.0.0.1:{getattr(self.ports, chain + '_proxy')}"

    @property
    def kms_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.kms}"

    def chain_settings(self) -> dict[str, object]:
        """Custody's chains, every endpoint a fault proxy."""
        stellar_proxy = self.proxy_url("stellar")
        return {
            "anvil": EvmChainSettings(
                chain_id=31337,
                rpc_url=self.proxy_url("anvil"),
                tokens={"TUSD": TokenSettings(address=self.token_address, decimals=TOKEN_DECIMALS)},
                faucet_enabled=True,
                fee_bump_after_seconds=8,
                # finality "auto" (the default): anvil's finalized block, two blocks back here
            ),
            "solana": SolanaChainSettings(
                rpc_url=self.proxy_url("solana"),
                tokens={"TUSD": TokenSettings(address=self.spl_mint, decimals=TOKEN_DECIMALS)},
                faucet_enabled=True,
            ),
            "stellar": StellarChainSettings(
                horizon_url=stellar_proxy,
                network_passphrase=STELLAR_PASSPHRASE,
                friendbot_url=f"{stellar_proxy}/friendbot",
                faucet_enabled=True,
                # A payment not applied within a minute is re-signed (or, cancelled, ends):
                # short enough for the settle window, long enough for a loaded machine.
                fee_bump_after_seconds=3,
                timebounds_seconds=60,
                channels=ChannelSettings(count=CHANNELS, check_interval_seconds=60),
            ),
        }

    def custody_env(self, metrics_port: int = 0) -> dict[str, str]:
        env = {
            **os.environ,
            "CUSTODY_ENVIRONMENT": "test",
            "CUSTODY_LOG_LEVEL": "WARNING",
            "CUSTODY_LOG_JSON": "true",
            "CUSTODY_DATABASE_URL": self.postgres.url,
            "CUSTODY_REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "CUSTODY_TEMPORAL_ADDRESS": f"127.0.0.1:{self.ports.temporal}",
            "CUSTODY_TASK_QUEUE": TASK_QUEUE,
            "CUSTODY_WORKER_METRICS_PORT": str(metrics_port),
            "CUSTODY_TEMPORAL_METRICS_PORT": "0",
            "CUSTODY_FAUCET_DAILY_LIMIT": "1000",
            "CUSTODY_WORKER_SHUTDOWN_GRACE_SECONDS": "2",
            "CUSTODY_SIGNER_BACKEND": self.signer_backend,
            "CUSTODY_CHAINS": json.dumps({n: c.model_dump() for n, c in self.chain_settings().items()}),  # type: ignore[attr-defined]
        }
        if self.kms_enabled:
            env.update(
                CUSTODY_AWS_KMS__ENDPOINT_URL=self.kms_url,
                CUSTODY_AWS_KMS__REGION="us-east-1",
                CUSTODY_AWS_KMS__ALIAS_PREFIX="chaos",
                AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing",
                AWS_EC2_METADATA_DISABLED="true",
            )
        env.pop("CUSTODY_CHAOS_EXIT_AFTER_ACTIVITY", None)
        return env

    def custody_services(self) -> list[Service]:
        return [*self.workers, self.api]

    def all_services(self) -> list[Service]:
        nodes = [self.redis, self.anvil, self.solana, self.stellar, self.temporal, *self.proxies.values()]
        return nodes + ([self.kms] if self.kms_enabled else []) + self.custody_services()

    # --- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Everything up, in dependency order, independent parts side by side."""
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "pg").mkdir(exist_ok=True)
        self.work_dir.chmod(0o755)  # pgserver runs postgres as its own unprivileged user
        nodes = [self.redis, self.anvil, self.solana, self.stellar, self.temporal, *self.proxies.values()]
        if self.kms_enabled:
            nodes.append(self.kms)
        with ThreadPoolExecutor(len(nodes) + 1) as pool:
            futures = [pool.submit(s.start) for s in nodes] + [pool.submit(self.postgres.start)]
            for f in futures:
                f.result()
        asyncio.run(self._prepare_chains_and_database())
        self.start_custody()

    def start_custody(self) -> None:
        """The two workers and the API, with the current settings (signer backend included)."""
        for worker, port in zip(self.workers, self.ports.workers, strict=True):
            worker.env = self.custody_env(port)
        self.api.env = self.custody_env()
        with ThreadPoolExecutor(3) as pool:
            for f in [pool.submit(s.start) for s in self.custody_services()]:
                f.result()

    def stop_custody(self) -> None:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.stop(), self.custody_services()))

    async def _prepare_chains_and_database(self) -> None:
        from chaos.solana_token import create_mint
        from db.access import seed_dev_keys
        from db.engine import create_engine, create_session_factory
        from db.migrate import upgrade

        self.token_address = await local.deploy_test_token(self.node_url("anvil"), "Test USD", "TUSD", TOKEN_DECIMALS)
        self.spl_mint = await create_mint(self.node_url("solana"), self.work_dir / "spl-mint-authority.json", TOKEN_DECIMALS)
        engine = create_engine(self.postgres.url, pool_size=1)
        await upgrade(engine)
        await seed_dev_keys(create_session_factory(engine))  # the run acts as dev-alice-key and dev-ops-key
        await engine.dispose()

    def stop(self) -> None:
        """Everything down, custody first."""
        self.stop_custody()
        others = [s for s in self.all_services() if s not in self.custody_services()]
        with ThreadPoolExecutor(len(others)) as pool:
            list(pool.map(lambda s: s.stop(), others))
        self.postgres.stop()

    def supervise(self) -> list[str]:
        """Start again any part that died when nobody killed it; what was restarted."""
        restarted = []
        if self.postgres.down_unplanned():
            self.postgres.resume()
            restarted.append("postgres")
        for service in self.all_services():
            service.sample_cpu()
            if not service.check():
                service.start()
                restarted.append(service.name)
        return restarted
