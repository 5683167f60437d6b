"""Liveness, readiness (PostgreSQL, Redis, Temporal) and Prometheus metrics."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


async def _check(name: str, probe) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    try:
        await asyncio.wait_for(probe(), timeout=2)
        return name, "ok"
    except Exception as e:  # a readiness probe reports, it does not raise
        return name, f"error: {type(e).__name__}: {e}"[:200]


async def _dependencies(state: StateDep) -> dict[str, str]:
    async def database() -> None:
        async with state.sessions() as session:  # type: ignore[operator]
            await session.exec(sa.select(1))

    async def temporal() -> None:
        if not await state.temporal.service_client.check_health():
            raise RuntimeError("not serving")

    results = await asyncio.gather(
        _check("database", database), _check("redis", state.redis.ping), _check("temporal", temporal)
    )
    return dict(results)


@router.get("/ready")
async def ready(state: StateDep) -> JSONResponse:
    checks = await _dependencies(state)
    healthy = all(v == "ok" for v in checks.values())
    return JSONResponse(status_code=200 if healthy else 503, content={"status": "ok" if healthy else "unavailable", "checks": checks})


@router.get("/health")
async def health(state: StateDep) -> JSONResponse:
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
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
