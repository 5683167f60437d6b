"""Every error leaves the API as {"error": {"code", "message", "details"}} with a fitting status."""

from __future__ import annotations

import logging

import asyncpg.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError

from core.errors import CustodyError, DatabaseNotMigrated, DatabaseUnavailable, RateLimited, TemporalUnavailable
from core.temporal import temporal_unreachable
from db.unavailable import database_unavailable, schema_behind

log = logging.getLogger("custody.api")


def error_response(status: int, code: str, message: str, details: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message, "details": details or {}}})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CustodyError)
    async def _custody(_: Request, e: CustodyError) -> JSONResponse:
        response = error_response(e.http_status, e.code, e.message, {k: str(v) for k, v in e.details.items()})
        if isinstance(e, RateLimited) and "retry_after_seconds" in e.details:
            response.headers["Retry-After"] = str(e.details["retry_after_seconds"])
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(str(p) for p in err["loc"] if p != "body"), "problem": err["msg"]} for err in e.errors()]
        return error_response(422, "VALIDATION_ERROR", "request is not valid", {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(e.status_code, "HTTP_ERROR")
        return error_response(e.status_code, code, str(e.detail))

    async def _temporal(_: Request, e: Exception) -> JSONResponse:
        """Temporal out of reach (e.g. starting a workflow while it restarts) is a 503: try again."""
        if not temporal_unreachable(e):
            log.error("unhandled Temporal error", exc_info=e)
            return error_response(500, "INTERNAL_ERROR", "internal error")
        log.warning("temporal unavailable", extra={"error": str(e)})
        return error_response(TemporalUnavailable.http_status, TemporalUnavailable.code, "Temporal did not answer: try again")

    app.add_exception_handler(RPCError, _temporal)
    app.add_exception_handler(RPCTimeoutOrCancelledError, _temporal)

    async def _database(_: Request, e: Exception) -> JSONResponse:
        """PostgreSQL out of reach (restarting, failing over) is a 503: nothing changed, try again.
        So is a schema older than the code (the API started before the worker migrated it)."""
        if schema_behind(e):
            log.warning("database schema behind the code", extra={"error": repr(e)})
            message = "the database is not migrated to this version yet (the worker migrates it as it starts): try again"
            return error_response(DatabaseNotMigrated.http_status, DatabaseNotMigrated.code, message)
        if not database_unavailable(e):
            log.error("unhandled error", exc_info=e)
            return error_response(500, "INTERNAL_ERROR", "internal error")
        log.warning("database unavailable", extra={"error": repr(e)})
        return error_response(DatabaseUnavailable.http_status, DatabaseUnavailable.code, "the database is out of reach: try again")

    for kind in (OSError, SQLAlchemyError, asyncpg.exceptions.PostgresError, asyncpg.exceptions.InterfaceError):
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "INTERNAL_ERROR", "internal error")
