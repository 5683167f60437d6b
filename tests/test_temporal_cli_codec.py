"""README's plain `temporal` CLI commands where the codec endpoint has its auth token
(CUSTODY_CODEC_AUTH_TOKEN): with `--codec-auth 'Bearer <token>'` (or TEMPORAL_CODEC_AUTH) the CLI
reads a withdrawal's state; without the token it cannot decode it. The API serves on a real port
(uvicorn), because the CLI calls the codec endpoint over HTTP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.conftest import ALICE, api_client, create_wallet, serve_api, wait_for_status

TOKEN = "codec-t0ken"
TEMPORAL = str(Path(sys.executable).parent / "temporal")


@pytest.fixture
def settings(base_settings, task_queue):  # type: ignore[no-untyped-def]
    return base_settings.model_copy(
        update={"task_queue": task_queue, "codec_auth_token": SecretStr(TOKEN), "approval_thresholds": {"anvil:ETH": "1"}}
    )


async def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")} | (env or {})
    return await asyncio.to_thread(subprocess.run, [TEMPORAL, *args], capture_output=True, text=True, env=clean, timeout=60)


async def test_the_plain_cli_reads_through_the_codec_with_its_token(settings, client, worker, temporal_env) -> None:  # type: ignore[no-untyped-def]
    async with serve_api(settings, client) as base_url:
        async with api_client(settings, client) as api:
            wallet = await create_wallet(api)
            await api.post(f"/v1/wallets/{wallet['id']}/fund", json={"amount": "3"}, headers=ALICE)
            accepted = await api.post(
                "/v1/withdrawals",
                headers={**ALICE, "Idempotency-Key": "cli-codec"},
                json={"wallet_id": wallet["id"], "to": "0x000000000000000000000000000000000000dEaD", "asset": "ETH", "amount": "1.5"},
            )
            assert accepted.status_code == 202, accepted.text
            withdrawal_id = accepted.json()["id"]
            await wait_for_status(api, withdrawal_id, {"AWAITING_APPROVAL"})

        address = temporal_env.client.service_client.config.target_host
        query = ["workflow", "query", "--address", address, "-w", f"withdrawal-{withdrawal_id}", "--name", "state"]
        codec = f"{base_url}/codec"
        read = await _cli(*query, "--codec-endpoint", codec, "--codec-auth", f"Bearer {TOKEN}")
        assert read.returncode == 0 and '"AWAITING_APPROVAL"' in read.stdout, read.stdout + read.stderr
        by_env = await _cli(*query, env={"TEMPORAL_CODEC_ENDPOINT": codec, "TEMPORAL_CODEC_AUTH": f"Bearer {TOKEN}"})
        assert by_env.returncode == 0 and '"AWAITING_APPROVAL"' in by_env.stdout, by_env.stdout + by_env.stderr
        refused = await _cli(*query, "--codec-endpoint", codec)  # no token: the codec answers 401
        assert "AWAITING_APPROVAL" not in refused.stdout, refused.stdout
        assert refused.returncode != 0 and "codec endpoint needs its bearer token" in refused.stderr, refused.stderr
