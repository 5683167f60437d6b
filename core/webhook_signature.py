"""How a webhook body is signed, and how a receiver checks it (README, Webhooks).

`X-Custody-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the timestamp
(Unix seconds) in `X-Custody-Timestamp`: binding the timestamp lets receivers refuse replays of an
old delivery (more than `tolerance` seconds off). The secret is used as its UTF-8 bytes, whole.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "X-Custody-Signature"
TIMESTAMP_HEADER = "X-Custody-Timestamp"
EVENT_ID_HEADER = "X-Custody-Event-Id"
EVENT_TYPE_HEADER = "X-Custody-Event-Type"
DELIVERY_ID_HEADER = "X-Custody-Delivery-Id"
VERSION = "v1"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """32 random bytes, URL-safe: `whsec_...`."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{VERSION}={digest}"


def verify(secret: str, timestamp: str, body: bytes, header: str, *, tolerance: int = 300, now: float | None = None) -> bool:
    """True when `header` is the signature of `timestamp.body` and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, ts, body), header)
