"""The one place that decides what must never leave the process in an error message or a log
line: RPC / Horizon endpoint URLs (their path, query and user info often carry a provider's API
key) and the secrets named in settings.

Two exits call `redact`: every `CustodyError` message and detail (so API answers and Temporal
failures are clean), and every log record (`RedactingFilter`, installed on the handlers by
`core.logs.configure_logging`). A URL anywhere in a text keeps only its scheme, host and port;
strings registered as secret (endpoint URL parts that may appear without their scheme, such as
`url: /v2/<key>`, payload keys, the KEK, tokens) are replaced wherever they appear.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

MASK = "<redacted>"
# scheme://anything-up-to-whitespace-or-quote; what follows host[:port] is masked.
_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.\-]*://)([^\s'\"<>]+)")
_MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: list[str] = []  # longest first, so a whole URL is replaced before its path


def url_secrets(url: str) -> list[str]:
    """The parts of an endpoint URL that must not reach an error message or a log line."""
    parts = urlsplit(url)
    found = [url, url.rstrip("/"), parts.query, parts.username or "", parts.password or ""]
    if parts.path.strip("/"):
        found += [parts.path, parts.path + (f"?{parts.query}" if parts.query else "")]
    found += [value for _, value in parse_qsl(parts.query)]
    return [s for s in found if len(s) >= 4]


def register_secrets(values: Iterable[str]) -> None:
    """Mask these strings wherever they appear from now on (this process)."""
    fresh = {v for v in values if isinstance(v, str) and len(v) >= _MIN_SECRET_LENGTH}
    if not fresh:
        return
    global _secrets
    with _lock:
        merged = set(_secrets) | fresh
        if len(merged) != len(_secrets):
            _secrets = sorted(merged, key=len, reverse=True)


def register_urls(urls: Iterable[str]) -> None:
    """The parts of endpoint URLs that may carry a key (path, query, user info), so they are
    masked even where they appear without their scheme and host. Hosts stay readable."""
    parts = []
    for url in urls:
        split = urlsplit(url)
        if split.path.strip("/"):
            parts += [split.path, split.path.rstrip("/")]
        parts += [split.query, split.username or "", split.password or ""]
        parts += [value for _, value in parse_qsl(split.query)]
    register_secrets(p for p in parts if p.strip("/"))


def register_settings(settings) -> None:  # type: ignore[no-untyped-def]
    """Every secret a Settings object holds: endpoint URLs, payload keys, KEK, tokens."""
    values = [k.get_secret_value() for k in settings.payload_keys.values()]
    for chain in settings.chains.values():
        register_urls(chain.endpoint_urls())
        authority = getattr(chain, "faucet_token_authority", None)  # a test network's token issuer key
        if authority is not None:
            values.append(authority.get_secret_value())
    values.append(settings.keystore_kek.get_secret_value())
    values.append(settings.codec_auth_token.get_secret_value())
    for name in ("temporal_api_key", "intent_seal_key"):
        secret = getattr(settings, name, None)
        if secret is not None:
            values.append(secret.get_secret_value())
    register_secrets(v for v in values if not v.startswith(("aws-kms:", "gcp-kms:")))


def _mask_url(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    cut = re.search(r"[/?#]", rest)
    authority, tail = (rest[: cut.start()], rest[cut.start() :]) if cut else (rest, "")
    host = authority.rsplit("@", 1)[-1].rstrip(".,;:)]}")
    hidden = "@" in authority or tail.strip("/.,;:)]}") != ""
    return f"{scheme}{host}/{MASK}" if hidden else f"{scheme}{host}"


def redact(text: str) -> str:
    """`text` with every URL cut to scheme://host[:port] and every registered secret masked."""
    if not text:
        return text
    text = _URL.sub(_mask_url, text)  # first, so a URL keeps its host (useful, and not secret)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    return value


class RedactingFilter(logging.Filter):
    """Masks a record's message, arguments, exception text and string fields before any
    formatter sees them. Installed on handlers, so it covers every logger that propagates."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: keep its template
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and isinstance(value, (str, list, tuple, dict)):
                setattr(record, key, redact_value(value))
        return True


_RECORD_FIELDS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
