"""The HTTP edge and what leaves the process: deep or oversized bodies answered 4xx (on a real
API process: the deep one used to segfault it), amounts parsed whole and bounded, security
headers and CORS only on /codec, rate limits in a real Redis (429 + Retry-After; Redis down:
reads pass, writes fail closed), an RPC provider's key never in an API error nor a worker log
line, Temporal TLS / API-key settings, and production refusing the dev payload key by value."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from pydantic import ValidationError

from core.errors import ChainUnavailable
from core.identity import Role
from core.redaction import redact
from core.settings import DEV_PAYLOAD_KEY, EvmChainSettings, RateLimitSettings, Settings, TemporalTlsSettings
from core.temporal import connect_temporal, tls_config
from devnet import local
from tests.conftest import ALICE, api_client, create_wallet, new_identity, random_address, withdraw

SECRET = "SUPERSECRETKEY123abc"


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CUSTODY_ENVIRONMENT": "test",
        "CUSTODY_LOG_JSON": "true",
        "CUSTODY_DATABASE_URL": settings.database_url,
        "CUSTODY_REDIS_URL": settings.redis_url,
        "CUSTODY_TEMPORAL_ADDRESS": settings.temporal_address,
        "CUSTODY_TASK_QUEUE": settings.task_queue,
        "CUSTODY_WORKER_METRICS_PORT": "0",
        "CUSTODY_TEMPORAL_METRICS_PORT": "0",
        # A test's worker stops at its end: activities in flight need not drain for 30 s.
        "CUSTODY_WORKER_SHUTDOWN_GRACE_SECONDS": str(settings.worker_shutdown_grace_seconds),
        "CUSTODY_CHAINS": json.dumps({name: c.model_dump() for name, c in settings.chains.items()}),
    }


async def test_deep_and_oversized_bodies_get_4xx_from_a_real_api_process(settings, sessions, tmp_path):
    """100,000 nested `[` used to kill the API process (py_ecc raises the recursion limit, the C
    JSON decoder overflows the C stack): now refused before parsing, and the process lives on."""
    port = local.free_port()
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.main:app_from_env", "--factory", "--host", "127.0.0.1", "--port", str(port)],
        cwd=local.ROOT,
        env=_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        while not local.port_open(port):
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            await asyncio.sleep(0.1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for path in ("/v1/withdrawals", "/codec/decode", "/v1/wallets"):
                deep = await http.post(path, content=b"[" * 100_000, headers={"content-type": "application/json"})
                assert deep.status_code == 422 and "nested deeper" in deep.json()["error"]["message"], deep.text
            nested_object = b'{"a":' * 40 + b"1" + b"}" * 40
            assert (await http.post("/v1/wallets", content=nested_object, headers={**ALICE, "content-type": "application/json"})).status_code == 422
            try:  # refused unread: the server may close while the client is still sending
                big = await http.post("/v1/wallets", content=b" " * (2 * 1024 * 1024), headers={"content-type": "application/json"})
                assert big.status_code == 413 and big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
            except httpx.TransportError:
                pass
            # Brackets inside strings are not nesting.
            quoted = await http.post("/v1/wallets", json={"chain": "[" * 5000, "label": "x"}, headers=ALICE)
            assert quoted.status_code == 422 and quoted.json()["error"]["code"] == "VALIDATION_ERROR"
            assert (await http.get("/live")).status_code == 200
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


async def test_oversized_bodies_are_refused_unparsed_declared_or_streamed(api):
    big = await api.post("/v1/wallets", content=b" " * (2 * 1024 * 1024), headers={**ALICE, "content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

    async def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 65536

    streamed = await api.post("/v1/wallets", content=chunks(), headers={**ALICE, "content-type": "application/json"})
    assert streamed.status_code == 413
    assert (await api.post("/v1/wallets", content=b"[" * 33, headers=ALICE)).status_code == 422
    assert (await api.post("/v1/wallets", json={"chain": "anvil", "label": "[[[[" * 10}, headers=ALICE)).status_code == 201


async def test_the_codec_endpoint_answers_malformed_payloads_with_422(api):
    for body in ({"payloads": "x"}, {"payloads": [1]}, {"payloads": [{"data": "!!not base64!!"}]}):
        response = await api.post("/codec/encode", json=body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "VALIDATION_ERROR", (body, response.text)


@pytest.mark.parametrize(("amount", "code"), [("1.5\n", "INVALID_AMOUNT"), ("9" * 99, "INVALID_AMOUNT"), (" 1", "INVALID_AMOUNT")])
async def test_amounts_are_matched_whole_and_bounded(api, amount, code):
    wallet = await create_wallet(api)
    response = await withdraw(api, wallet, random_address(), amount)
    assert response.status_code == 422 and response.json()["error"]["code"] == code, response.text


async def test_security_headers_everywhere_and_cors_only_on_the_codec(api):
    live = await api.get("/live")
    for header, value in {
        "x-content-type-options": "nosniff",
        "x-frame-options": "DENY",
        "referrer-policy": "no-referrer",
        "cache-control": "no-store",
        "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    }.items():
        assert live.headers[header] == value
    assert "content-security-policy" not in (await api.get("/docs")).headers  # Swagger UI loads its scripts
    ui = {"Origin": "http://127.0.0.1:8233", "Access-Control-Request-Method": "POST"}
    assert (await api.options("/codec/decode", headers=ui)).headers.get("access-control-allow-origin") == "http://127.0.0.1:8233"
    elsewhere = await api.options("/v1/wallets", headers=ui)
    assert "access-control-allow-origin" not in elsewhere.headers
    assert "access-control-allow-origin" not in (await api.get("/v1/wallets", headers={**ALICE, "Origin": ui["Origin"]})).headers
    # Readiness says ok/error only; details need the operations scope.
    assert (await api.get("/health")).status_code == 401
    assert (await api.get("/metrics")).status_code == 401


def _client_at(api, ip: str) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api._transport.app, client=(ip, 4000)), base_url="http://custody.test")


@pytest.fixture
def limited(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(
        update={"rate_limits": RateLimitSettings(per_identity="4/minute", per_ip="1000/minute", wallet_creation="1/hour", failed_auth="3/minute")}
    )


async def test_rate_limits_per_identity_per_ip_wallet_creation_and_failed_auth(limited, client, worker, sessions):
    async with api_client(limited, client) as api:
        me, _ = await new_identity(sessions, Role.USER)
        async with _client_at(api, f"10.9.{uuid.uuid4().int % 250}.1") as http:
            answers = [await http.get("/v1/wallets", headers=me) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
        assert answers[-1].json()["error"]["code"] == "RATE_LIMITED" and 1 <= int(answers[-1].headers["Retry-After"]) <= 60

        creator, _ = await new_identity(sessions, Role.USER)
        async with _client_at(api, "10.8.0.1") as http:
            first = await http.post("/v1/wallets", json={"chain": "anvil", "label": "a"}, headers=creator)
            second = await http.post("/v1/wallets", json={"chain": "anvil", "label": "b"}, headers=creator)
        assert first.status_code == 201 and second.status_code == 429
        assert "wallet creation" in second.json()["error"]["message"] and int(second.headers["Retry-After"]) > 60

        valid, _ = await new_identity(sessions, Role.USER)
        async with _client_at(api, f"10.7.{uuid.uuid4().int % 250}.2") as guesser:
            tries = [await guesser.get("/v1/wallets", headers={"Authorization": f"Bearer guess-{i}"}) for i in range(3)]
            assert [t.status_code for t in tries] == [401, 401, 401]
            locked = await guesser.get("/v1/wallets", headers=valid)  # even a good key, from that address
            assert locked.status_code == 429 and int(locked.headers["Retry-After"]) >= 1
        async with _client_at(api, "10.6.0.1") as elsewhere:
            assert (await elsewhere.get("/v1/wallets", headers=valid)).status_code == 200


async def test_without_redis_reads_pass_and_writes_fail_closed(settings, client, worker):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{local.free_port()}/0"})
    async with api_client(down, client) as api:
        assert (await api.get("/v1/wallets", headers=ALICE)).status_code == 200
        refused = await api.post("/v1/wallets", json={"chain": "anvil"}, headers=ALICE)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "RATE_LIMITER_UNAVAILABLE"


# --- secrets never leave -------------------------------------------------------------------------
@pytest.fixture
async def keyed_rpc():  # type: ignore[no-untyped-def]
    """An RPC provider that refuses every call with 401, at a URL whose path is its API key."""

    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=401, text="invalid api key")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    port = local.free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/v2/{SECRET}"
    await runner.cleanup()


async def test_an_rpc_key_is_in_no_api_error_and_no_worker_log_line(settings, client, sessions, keyed_rpc, tmp_path):

    chains = {**settings.chains, "keyed": EvmChainSettings(chain_id=31337, rpc_url=keyed_rpc, poll_interval_seconds=0.2)}
    keyed = settings.model_copy(update={"chains": chains})
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([sys.executable, "worker.py"], cwd=local.ROOT, env=_env(keyed), stdout=log, stderr=subprocess.STDOUT)
    try:
        async with api_client(keyed, client) as api:
            created = await api.post("/v1/wallets", json={"chain": "keyed", "label": "k"}, headers=ALICE)
            assert created.status_code in (201, 202), created.text
            wallet = created.json()
            for _ in range(300):
                wallet = (await api.get(f"/v1/wallets/{wallet['id']}", headers=ALICE)).json()
                if wallet["status"] == "ACTIVE":
                    break
                await asyncio.sleep(0.1)
            balances = await api.get(f"/v1/wallets/{wallet['id']}/balances", headers=ALICE)
            assert balances.status_code == 503 and balances.json()["error"]["code"] == "CHAIN_UNAVAILABLE"
            assert SECRET not in balances.text and "127.0.0.1" in balances.text, balances.text
            accepted = await withdraw(api, wallet, random_address(), "0.1")
            assert accepted.status_code == 202
            for _ in range(300):  # the reserve step fails on the RPC and is retried, logging why
                if "CHAIN_UNAVAILABLE" in log_path.read_text():
                    break
                await asyncio.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    text = log_path.read_text()
    assert "CHAIN_UNAVAILABLE" in text and "keyed RPC unreachable" in text
    assert SECRET not in text and "/v2/" not in text


def test_redaction_keeps_hosts_and_drops_keys():
    from core.redaction import register_urls

    message = f"401, message='Unauthorized', url='https://polygon-mainnet.g.alchemy.com/v2/{SECRET}'"
    assert redact(message) == "401, message='Unauthorized', url='https://polygon-mainnet.g.alchemy.com/<redacted>'"
    assert redact("Cannot connect to host 127.0.0.1:8545 ssl:default") == "Cannot connect to host 127.0.0.1:8545 ssl:default"
    register_urls([f"https://rpc.example/{SECRET}x?apikey=QUERYSECRET99"])
    assert SECRET not in redact(f"HTTPConnectionPool: Max retries exceeded with url: /{SECRET}x")
    assert "QUERYSECRET99" not in ChainUnavailable("failed: apikey=QUERYSECRET99").message


# --- settings ------------------------------------------------------------------------------------
def test_production_refuses_the_dev_payload_key_by_value(monkeypatch):
    monkeypatch.setenv("CUSTODY_ENVIRONMENT", "production")
    monkeypatch.setenv("CUSTODY_KEYSTORE_KEK", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("CUSTODY_CODEC_AUTH_TOKEN", "ui-token")
    monkeypatch.setenv("CUSTODY_CHAINS", '{"polygon": {"chain_id": 137, "rpc_url": "http://x", "native_symbol": "POL"}}')
    for disguised in (DEV_PAYLOAD_KEY + "\n", " " + DEV_PAYLOAD_KEY, DEV_PAYLOAD_KEY[:20] + "\n" + DEV_PAYLOAD_KEY[20:]):
        monkeypatch.setenv("CUSTODY_PAYLOAD_KEYS", json.dumps({"p1": disguised}))
        monkeypatch.setenv("CUSTODY_PAYLOAD_KEY_ID", "p1")
        with pytest.raises(ValidationError, match="PAYLOAD_KEYS"):
            Settings()
    monkeypatch.setenv("CUSTODY_CODEC_AUTH_TOKEN", "  ")
    monkeypatch.setenv("CUSTODY_PAYLOAD_KEYS", json.dumps({"p1": base64.b64encode(os.urandom(32)).decode()}))
    with pytest.raises(ValidationError, match="CODEC_AUTH_TOKEN"):
        Settings()


def test_temporal_tls_settings_need_a_client_key_with_a_client_certificate(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    settings = Settings(temporal_tls=TemporalTlsSettings(server_root_ca_cert_path=str(ca), domain="temporal.internal"))
    config = tls_config(settings)
    assert config is not False and config.server_root_ca_cert == ca.read_bytes() and config.domain == "temporal.internal"
    assert tls_config(Settings()) is False
    with pytest.raises(ValueError, match="together"):
        tls_config(Settings(temporal_tls=TemporalTlsSettings(client_cert_path=str(ca))))


async def test_a_temporal_api_key_is_sent_and_plaintext_still_works_against_the_dev_server(base_settings):
    from pydantic import SecretStr

    with_key = base_settings.model_copy(update={"temporal_api_key": SecretStr("tmprl-test-key")})
    connected = await connect_temporal(with_key)
    assert connected.service_client.config.api_key == "tmprl-test-key"
    assert await connected.service_client.check_health()
