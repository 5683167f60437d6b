"""The HTTP edge, as plain ASGI middleware in front of the app:

- `BodyGuard`: the body is read (at most `max_body_bytes`, else 413) and its JSON nesting depth
  measured (deeper than `max_json_depth`: 422) before anything parses it. Why the depth matters:
  web3's py_ecc raises the interpreter's recursion limit to 100,000 at import, so the C JSON
  decoder no longer stops at RecursionError and 100,000 nested `[` overflow the C stack: a
  segfault of the whole API process from one unauthenticated request.
- `SecurityHeaders`: nosniff, no framing, no referrer, no caching, a closed CSP (the docs pages
  excepted: they load Swagger UI's scripts), HSTS in production.
- `CodecOnlyCors`: CORS for the Temporal UI's origin on /codec/* only; every other route is for
  API clients, not browsers on other origins.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.middleware.cors import CORSMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
CONSOLE_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": {}}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether brackets nest deeper than `limit` outside JSON strings (no parsing, no recursion)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


# PostgreSQL's text cannot hold NUL: a NUL reaching a query or an insert was a 500 (found by the
# fuzzer). Refused at the edge, once for every route. (A JSON string holding the six characters
# backslash-u-0-0-0-0 literally is refused too: rare, and the answer says why.)
JSON_NUL = b"\\u0000"


def _carries_nul(path: str, query_string: bytes) -> bool:
    return "\x00" in path or b"%00" in query_string.lower() or b"\x00" in query_string


class BodyGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _carries_nul(scope.get("path", ""), scope.get("query_string", b"")):
            await _error(send, 422, "VALIDATION_ERROR", "NUL characters are not accepted in a path or query")
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _error(send, 400, "VALIDATION_ERROR", "Content-Length is not a number")
                return
            if size > self.max_body_bytes:
                await _error(send, 413, "PAYLOAD_TOO_LARGE", f"request body over {self.max_body_bytes} bytes")
                return
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_body_bytes:
                await _error(send, 413, "PAYLOAD_TOO_LARGE", f"request body over {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body and json_depth_exceeds(body, self.max_json_depth):
            await _error(send, 422, "VALIDATION_ERROR", f"JSON nested deeper than {self.max_json_depth} levels")
            return
        form = headers.get(b"content-type", b"").startswith(b"application/x-www-form-urlencoded")
        if JSON_NUL in body or (form and b"%00" in body.lower()):
            await _error(send, 422, "VALIDATION_ERROR", "NUL characters are not accepted in a request body")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(DOCS_PATHS)
        console = scope["path"] == "/console" or scope["path"].startswith("/console/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-resource-policy", b"same-origin"),
                ]
                if b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                if console:  # its own pages, script and style only: no inline code, nothing from elsewhere
                    extra.append((b"content-security-policy", CONSOLE_CSP))
                elif not docs:
                    extra.append((b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"))
                if self.hsts:
                    extra.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        await self.app(scope, receive, with_headers)


class CodecOnlyCors:
    def __init__(self, app: ASGIApp, ui_origin: str) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, allow_origins=[ui_origin.rstrip("/")], allow_methods=["POST"], allow_headers=["*"], allow_credentials=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/codec/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
