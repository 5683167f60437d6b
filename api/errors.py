"""Every error leaves the API as {"error": {"code", "message", "details"}} with a fitting status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import CustodyError, RateLimited

log = logging.getLogger("custody.api")


def error_response(status: int, code: str, message: str, details: dict | None = None) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"error": {"code": code, "message": message, "details": details or {}}}
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CustodyError)
    async def _custody(_: Request, e: CustodyError) -> JSONResponse:
        response = error_response(e.http_status, e.code, e.message, {k: str(v) for k, v in e.details.items()})
        if isinstance(e, RateLimited) and "retry_after_seconds" in e.details:
            response.headers["Retry-After"] = str(e.details["retry_after_seconds"])
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "problem": err["msg"]}
            for err in e.errors()
        ]
        return error_response(422, "VALIDATION_ERROR", "request is not valid", {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(e.status_code, "HTTP_ERROR")
        return error_response(e.status_code, code, str(e.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "INTERNAL_ERROR", "internal error")
