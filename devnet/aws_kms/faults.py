"""Error injection for the AWS devnet, controlled over HTTP.

Control endpoint (served by the same HTTP server as the AWS APIs)::

    POST   /_custody/faults   {"Sign": {"error": "ThrottlingException", "count": 2}}
    GET    /_custody/faults   -> {"rules": {...}, "fired": {...}, "calls": {...}}
    DELETE /_custody/faults   clears rules and counters

Rule keys are either a bare operation name (``"Sign"``, matches that operation of any
JSON-protocol service) or a full ``X-Amz-Target`` (``"TrentService.Sign"``,
``"secretsmanager.GetSecretValue"``). A rule is::

    {"error": "<AWS error code>" | null,   # null: no error, only the delay
     "count": N,                           # how many matching calls it affects (default 1)
     "message": "...",                     # optional, defaults to what AWS says
     "status": 500,                        # optional, defaults to AWS's status for the code
     "delay": 0.5}                         # optional seconds to sleep first

``count`` <= 0 or a ``null`` rule removes the rule. POST merges with existing rules.
The next ``count`` matching requests get the error exactly as AWS's JSON 1.1 protocol
sends it (``{"__type": code, "message": ...}`` with the right HTTP status), so botocore
raises ``ClientError`` with that ``Error.Code`` and applies its normal retry rules
(400 + ThrottlingException and any 5xx are retried by botocore).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from devnet.faults import FaultTable

CONTROL_PATH = "/_custody/faults"
HEALTH_PATH = "/_custody/health"

# code -> (HTTP status, default message) as AWS KMS / Secrets Manager send them.
AWS_ERRORS: dict[str, tuple[int, str]] = {
    "ThrottlingException": (
        400,
        "You have exceeded the rate at which you may call KMS. Reduce the frequency of your calls.",
    ),
    "KMSInternalException": (500, "An internal error occurred. Please try again."),
    "DependencyTimeoutException": (
        500,
        "The system timed out while trying to fulfill the request. You can retry the request.",
    ),
    "KeyUnavailableException": (500, "The KMS key is not available. You can retry the request."),
    "LimitExceededException": (400, "A length constraint or quota was exceeded."),
    "DisabledException": (400, "The KMS key is disabled."),
    "KMSInvalidStateException": (400, "The key state is not valid for this request."),
    "NotFoundException": (400, "The specified entity or resource could not be found."),
    "AccessDeniedException": (400, "User is not authorized to perform this operation."),
    "InvalidCiphertextException": (400, ""),
    "IncorrectKeyException": (400, "The key ID in the request does not identify a KMS key that can perform this operation."),
    # Secrets Manager
    "InternalServiceError": (500, "An error occurred on the server side."),
    "ResourceNotFoundException": (400, "Secrets Manager can't find the specified secret."),
    # generic
    "ServiceUnavailableException": (503, "Service Unavailable"),
}


class FaultInjector(FaultTable):
    """AWS JSON-protocol faults: `error` is an AWS error name (its HTTP status filled in)."""

    fields = frozenset({"error", "message", "status"})

    def _rule(self, name: str, rule: dict[str, Any]) -> dict[str, Any]:
        error = rule.get("error")
        status = rule.get("status")
        if error is not None and status is None:
            if error not in AWS_ERRORS:
                raise ValueError(f"unknown error {error!r}: give 'status' too, or one of {sorted(AWS_ERRORS)}")
            status = AWS_ERRORS[error][0]
        message = rule.get("message")
        if error is not None and message is None:
            message = AWS_ERRORS.get(error, (0, error))[1]
        return {"error": error, "message": message, "status": int(status) if status is not None else None}

    def take(self, target: str) -> dict[str, Any] | None:
        """Count a call to ``target`` (``Prefix.Operation``); consume a matching rule."""
        op = target.split(".", 1)[-1]
        return self._consume((target, op), op)


def _json_response(start_response: Callable[..., Any], status: int, body: Any, extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    payload = json.dumps(body).encode()
    reason = {
        200: "OK",
        400: "Bad Request",
        404: "Not Found",
        405: "Method Not Allowed",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Error")
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload))), *extra]
    start_response(f"{status} {reason}", headers)
    return [payload]


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return environ["wsgi.input"].read(length) if length > 0 else b""


class FaultMiddleware:
    """WSGI middleware: control endpoint + fault injection in front of moto's app."""

    def __init__(self, app: Callable[..., Any], injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            return _json_response(start_response, 200, {"ok": True})
        if path == CONTROL_PATH:
            return self._control(environ, start_response)
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            rule = self.injector.take(target)
            if rule is not None:
                if rule["delay"] > 0:
                    time.sleep(rule["delay"])
                if rule["error"] is not None:
                    _read_body(environ)  # keep the keep-alive connection in sync
                    body = {"__type": rule["error"], "message": rule["message"]}
                    payload = json.dumps(body).encode()
                    status = rule["status"]
                    start_response(
                        f"{status} {'Bad Request' if status < 500 else 'Internal Server Error'}",
                        [
                            ("Content-Type", "application/x-amz-json-1.1"),
                            ("Content-Length", str(len(payload))),
                            ("x-amzn-RequestId", str(uuid.uuid4())),
                            ("x-amzn-ErrorType", rule["error"]),
                            ("x-custody-devnet-fault", "1"),
                        ],
                    )
                    return [payload]
        return self.app(environ, start_response)

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method == "GET":
            return _json_response(start_response, 200, self.injector.snapshot())
        if method == "DELETE":
            _read_body(environ)
            self.injector.clear()
            return _json_response(start_response, 200, self.injector.snapshot())
        if method in ("POST", "PUT"):
            raw = _read_body(environ)
            try:
                spec = json.loads(raw or b"{}")
                return _json_response(start_response, 200, self.injector.configure(spec))
            except (ValueError, TypeError) as exc:
                return _json_response(start_response, 400, {"error": str(exc)})
        return _json_response(start_response, 405, {"error": f"method {method} not allowed"})
