"""Schemathesis over the API's own OpenAPI schema, against the real API (uvicorn, with a worker,
PostgreSQL, Redis, Temporal, anvil): valid and invalid requests for every operation, as a user
who holds every role, and as nobody. Zero 5xx.

Not fuzzed: pause-all / resume-all (they act on every running withdrawal of the namespace)."""

from __future__ import annotations

import asyncio
import os

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from api.main import create_app
from core.identity import Role
from tests.conftest import new_identity, serve_app

# CI: 15 derandomized examples per operation. A longer hunt by hand:
# CUSTODY_FUZZ_EXAMPLES=100 CUSTODY_FUZZ_RANDOM=1 ./dev test tests/api/test_fuzz.py
EXAMPLES_PER_OPERATION = int(os.environ.get("CUSTODY_FUZZ_EXAMPLES", "15"))
DERANDOMIZE = os.environ.get("CUSTODY_FUZZ_RANDOM") != "1"
SKIPPED = {"POST /v1/withdrawals/pause-all", "POST /v1/withdrawals/resume-all"}


def _probe_answer(name: str, response) -> bool:  # type: ignore[no-untyped-def]
    """/ready's 503 is its contract, not a server error: a dependency did not answer its 2 s
    check (Temporal busy with the rest of the suite on a 2-core machine, say), and it says which."""
    if name != "GET /ready" or response.status_code != 503:
        return False
    body = response.json()
    return body.get("status") == "unavailable" and "error" in body.get("checks", {}).values()


def _fuzz(schema, base_url: str, headers: dict[str, str]) -> list[str]:  # type: ignore[no-untyped-def]
    failures: list[str] = []
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        if name in SKIPPED:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for auth in (headers, {}):
                _fuzz_operation(operation, name, mode, auth, base_url, session, failures)
    return failures


def _fuzz_operation(operation, name: str, mode, auth: dict[str, str], base_url: str, session, failures: list[str]) -> None:  # type: ignore[no-untyped-def]
    """One operation, in one generation mode, with or without credentials: 5xx answers go to `failures`."""

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(base_url=base_url, session=session, headers=auth, timeout=60)
        if response.status_code >= 500 and not _probe_answer(name, response):
            failures.append(f"{name} ({mode.value}) -> {response.status_code}: {response.text[:300]} for {case.as_curl_command()}")

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid (an operation without parameters or body)


async def test_fuzzing_the_openapi_schema_finds_no_server_error(settings, client, worker, sessions):
    from db import policy

    fuzzer, _ = await new_identity(sessions, *Role)
    async with sessions() as session:
        _, policy_before = await policy.current(session)  # the fuzzer is an admin: it publishes policies
    app = create_app(settings, temporal=client)
    try:
        async with serve_app(app) as base_url:
            schema = schemathesis.openapi.from_dict(app.openapi())
            failures = await asyncio.to_thread(_fuzz, schema, base_url, fuzzer)
    finally:
        async with sessions() as session, session.begin():
            await policy.publish(session, policy_before, author="test", summary="put back after fuzzing")
    assert failures == [], "\n".join(failures[:20])
