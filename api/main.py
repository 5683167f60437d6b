"""The thin HTTP starter: it starts workflows and reads state; chain work happens in the worker.

Run: `uvicorn api.main:app` (or `custody api`); docs at /docs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import Histogram, start_http_server
from redis.asyncio import Redis
from temporalio.client import Client

from api.console import routes as console
from api.deps import AppState
from api.edge import BodyGuard, CodecOnlyCors, SecurityHeaders
from api.error_docs import document_errors
from api.errors import install_error_handlers
from api.oidc import OidcVerifier
from api.ratelimit import RateLimiter
from api.routes import (
    access_admin,
    address_book,
    admin,
    audit,
    channels,
    codec,
    health,
    operations,
    policy,
    pools,
    users,
    wallets,
    webhooks,
    withdrawals,
)
from chains.registry import ChainRegistry
from core.logs import configure_logging
from core.redaction import register_settings
from core.settings import Settings
from core.temporal import connect_temporal
from core.tracing import configure_tracing
from db.access import active_dev_keys
from db.engine import SessionFactory, create_engine, create_session_factory
from signers.kek import kek_from_settings
from signers.secret_box import SecretBox

REQUEST_SECONDS = Histogram("custody_api_request_duration_seconds", "API latency", ["method", "route", "status"])


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    settings = settings or Settings()

    register_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        sessions = create_session_factory(engine)
        if settings.environment == "production":
            await _refuse_dev_keys(sessions)
        # Short timeouts: a blackholed Redis must fail a rate-limit check, not hang requests.
        redis = Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        client = temporal or await connect_temporal(settings)
        oidc = OidcVerifier(settings.oidc) if settings.oidc is not None else None
        app.state.custody = AppState(
            settings=settings,
            sessions=sessions,
            temporal=client,
            redis=redis,
            chains=ChainRegistry.from_settings(settings),
            limiter=RateLimiter(redis, settings.rate_limits),
            oidc=oidc,
            secret_box=SecretBox(kek_from_settings(settings)),  # KMS KEKs are reached on first use only
        )
        try:
            yield
        finally:
            if oidc is not None:
                await oidc.aclose()
            await redis.aclose()
            await engine.dispose()

    # Swagger UI and ReDoc from the assets packaged with fastapi-offline, not a CDN: /docs works on
    # a machine without internet (tests/test_docs_offline.py opens it in a real browser).
    app = FastAPIOffline(
        static_url="/docs/assets",
        title="custody",
        version="0.1.0",
        description="Wallets and exactly-once withdrawals on Temporal. Authenticate with `Authorization: Bearer <api key>` "
        "(or an OIDC access token when an issuer is configured).",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_errors(app)  # each route's error answers, from the code (api/error_docs.py)

    @app.middleware("http")
    async def _timing(request: Request, call_next) -> Response:  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        response: Response = await call_next(request)
        route = request.scope.get("route")
        REQUEST_SECONDS.labels(request.method, getattr(route, "path", "unmatched"), str(response.status_code)).observe(time.perf_counter() - started)
        return response

    app.include_router(health.router)
    app.include_router(users.router)
    app.include_router(wallets.router)
    app.include_router(withdrawals.router)
    app.include_router(withdrawals.wallet_router)
    app.include_router(operations.router)
    app.include_router(codec.router)
    app.include_router(admin.router)
    app.include_router(access_admin.router)
    app.include_router(pools.router)
    app.include_router(channels.router)
    app.include_router(audit.router)
    app.include_router(policy.router)
    app.include_router(address_book.router)
    app.include_router(webhooks.router)
    console.install(app)  # /console: the operations console (server-rendered pages)
    # Added last = outermost: headers on every answer, then the body guard before any parsing.
    app.add_middleware(CodecOnlyCors, ui_origin=settings.temporal_ui_url)
    app.add_middleware(BodyGuard, max_body_bytes=settings.http.max_body_bytes, max_json_depth=settings.http.max_json_depth)
    app.add_middleware(SecurityHeaders, hsts=settings.environment == "production")
    return app


async def _refuse_dev_keys(sessions: SessionFactory) -> None:
    """Production never starts while a development key would authenticate (compared by hash)."""
    found = await active_dev_keys(sessions)
    if found:
        raise RuntimeError(
            f"development API keys are active in this database ({', '.join(found)}): revoke them "
            "(custody apikeys revoke) before starting in production"
        )


def app_from_env() -> FastAPI:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_json)
    configure_tracing(settings, "custody-api")
    if settings.api_metrics_port:
        start_http_server(settings.api_metrics_port, addr="127.0.0.1")
    return create_app(settings)
