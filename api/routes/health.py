"""Liveness, readiness (PostgreSQL, Redis, Temporal) and Prometheus metrics.

/live and /ready are open (probes) and say only ok/error per dependency; /health (with the
errors, environment and chains) and /metrics need the `operations` scope, or are read on the
internal metrics port (CUSTODY_API_METRICS_PORT)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import CallerDep, StateDep
from core.redaction import redact

router = APIRouter(tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    try:
        await asyncio.wait_for(probe(), timeout=2)
        return name, "ok"
    except Exception as e:  # a readiness probe reports, it does not raise
        return name, redact(f"error: {type(e).__name__}: {e}")[:200]


async def _dependencies(state: StateDep) -> dict[str, str]:
    async def database() -> None:
        async with state.sessions() as session:  # type: ignore[operator]
            await session.exec(sa.select(1))

    async def temporal() -> None:
        if not await state.temporal.service_client.check_health():
            raise RuntimeError("not serving")

    results = await asyncio.gather(_check("database", database), _check("redis", state.redis.ping), _check("temporal", temporal))
    return dict(results)


@router.get("/ready")
async def ready(state: StateDep) -> JSONResponse:
    checks = {name: "ok" if value == "ok" else "error" for name, value in (await _dependencies(state)).items()}
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(status_code=200 if healthy else 503, content={"status": "ok" if healthy else "unavailable", "checks": checks})


@router.get("/health")
async def health(state: StateDep, _: CallerDep) -> JSONResponse:
    checks = await _dependencies(state)
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(
        status_code=200 if healthy else 503,
        content={
            "status": "ok" if healthy else "degraded",
            "environment": state.settings.environment,
            "chains": state.chains.names(),
            "checks": checks,
        },
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(_: CallerDep) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
