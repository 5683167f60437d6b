"""The thin HTTP starter: it starts workflows and reads state; chain work happens in the worker.

Run: `uvicorn api.main:app` (or `custody api`); docs at /docs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import Histogram
from redis.asyncio import Redis
from temporalio.client import Client

from api.deps import AppState
from api.errors import install_error_handlers
from api.routes import admin, audit, channels, codec, health, operations, pools, wallets, withdrawals
from chains.registry import ChainRegistry
from core.logs import configure_logging
from core.settings import Settings
from core.temporal import connect_temporal
from db.engine import create_engine, create_session_factory

REQUEST_SECONDS = Histogram(
    "custody_api_request_duration_seconds", "API latency", ["method", "route", "status"]
)


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        redis = Redis.from_url(settings.redis_url)
        client = temporal or await connect_temporal(settings)
        app.state.custody = AppState(
            settings=settings,
            sessions=create_session_factory(engine),
            temporal=client,
            redis=redis,
            chains=ChainRegistry.from_settings(settings),
        )
        try:
            yield
        finally:
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="custody",
        version="0.1.0",
        description="Wallets and exactly-once withdrawals on Temporal. Authenticate with `Authorization: Bearer <api key>`.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.middleware("http")
    async def _timing(request: Request, call_next) -> Response:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        REQUEST_SECONDS.labels(
            request.method, getattr(route, "path", "unmatched"), str(response.status_code)
        ).observe(time.perf_counter() - started)
        return response

    app.include_router(health.router)
    app.include_router(wallets.router)
    app.include_router(withdrawals.router)
    app.include_router(withdrawals.wallet_router)
    app.include_router(operations.router)
    app.include_router(codec.router)
    app.include_router(admin.router)
    app.include_router(pools.router)
    app.include_router(channels.router)
    app.include_router(audit.router)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.temporal_ui_url.rstrip("/")],
        allow_methods=["POST"],
        allow_headers=["*"],
        allow_credentials=True,
    )
    return app


def app_from_env() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    return create_app(settings)
