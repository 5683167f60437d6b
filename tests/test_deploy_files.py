"""docker-compose.yml, the Dockerfile and .dockerignore checked against the code (there is no
Docker engine here: the files are read, not run): compose registers every search attribute with
its type, points the UI at the codec endpoint, runs the devnets `./dev up` runs, and sets every
variable `./dev up` sets, each a real setting, its chains valid and the same as `./dev up`'s."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from core.settings import Settings
from devnet import local, stack
from models import search_attributes

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def compose_env() -> dict[str, str]:
    env = SERVICES["worker"]["environment"]
    assert env == SERVICES["api"]["environment"], "the worker and the API must share their settings"
    return {k: str(v) for k, v in env.items()}


def test_compose_registers_every_search_attribute_with_its_type() -> None:
    script = " ".join(SERVICES["temporal-search-attributes"]["command"])
    registered = dict(re.findall(r"(Custody\w+)=(\w+)", script))
    assert registered == {key.name: kind for key, kind in search_attributes.KINDS.items()}
    assert "--name $${a%=*} --type $${a#*=}" in script  # each name with its own type


def test_compose_ui_decodes_payloads_through_the_codec_endpoint() -> None:
    ui = SERVICES["temporal-ui"]["environment"]
    api_port = SERVICES["api"]["ports"][0].split(":")[0]
    assert ui["TEMPORAL_CODEC_ENDPOINT"] == f"http://localhost:{api_port}/codec"


def test_compose_sets_what_dev_up_sets_and_only_real_settings() -> None:
    env = compose_env()
    ports = {name: 1 for name in ("redis", "temporal", "temporal_ui", "worker_metrics", "temporal_metrics")}
    dev_up = {name for name in stack.dev_env(ports, "postgresql+asyncpg://", {}) if name.startswith("CUSTODY_") and name not in os.environ}
    assert dev_up and dev_up <= set(env), f"./dev up sets what compose does not: {dev_up - set(env)}"
    fields = {f"CUSTODY_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, f"compose sets variables custody does not read: {set(env) - fields}"
    settings = Settings(**{k.removeprefix("CUSTODY_").lower(): json.loads(v) if v.startswith("{") else v for k, v in env.items()})
    assert settings.approval_thresholds == json.loads(stack.DEV_APPROVAL_THRESHOLDS)


def test_compose_chains_are_dev_ups_and_their_devnets_run() -> None:
    chains = json.loads(compose_env()["CUSTODY_CHAINS"])
    token = {"mint": "So11111111111111111111111111111111111111112", "authority": "", "symbol": "TUSD", "decimals": "6"}
    asset = {"code": "USDC", "issuer": "G", "secret": ""}
    dev_up = stack._chains({name: 1 for name in ("anvil", "solana", "stellar")}, "0x" + "0" * 40, token, asset)
    assert {n: c["family"] for n, c in chains.items()} == {n: c["family"] for n, c in dev_up.items()}
    assert chains["stellar"]["network_passphrase"] == dev_up["stellar"]["network_passphrase"]
    assert chains["stellar"]["channels"] == dev_up["stellar"]["channels"]
    Settings(chains=chains)  # each chain's settings validate
    for service, url in (("solana-devnet", chains["solana"]["rpc_url"]), ("stellar-devnet", chains["stellar"]["horizon_url"])):
        command = SERVICES[service]["command"]
        port = command[command.index("--port") + 1]
        assert url == f"http://{service}:{port}" and command[:3] == ["python", "-m", f"devnet.{service.split('-')[0]}"]
        assert service in SERVICES["worker"]["depends_on"]


def test_dockerfile_runs_as_a_non_root_user_and_the_context_leaves_local_state_out() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip() and not line.startswith("#")]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    assert lines.index(f"USER {users[-1]}") > max(i for i, line in enumerate(lines) if line.startswith("RUN "))
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".data", ".tools/node_modules"} <= ignored


def test_compose_temporal_runs_with_the_dynamic_config_dev_up_gives_its_server() -> None:
    temporal = SERVICES["temporal"]
    config_path = temporal["environment"]["DYNAMIC_CONFIG_FILE_PATH"]
    mounted = {target: source for source, target, *_ in (v.split(":") for v in temporal["volumes"])}
    assert config_path in mounted, f"{config_path} is not mounted into the temporal container"
    values = yaml.safe_load((ROOT / mounted[config_path]).read_text())
    # The file's form: each key a list of {value}; ./dev up passes key=value on the command line.
    given = {key: str(entries[0]["value"]).lower() for key, entries in values.items()}
    assert given == local.TEMPORAL_DYNAMIC_CONFIG
