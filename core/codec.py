"""Payload encryption for Temporal: AES-256-GCM, key id in the payload metadata, rotation by
adding a new key and making it active (old payloads still decode with their own key id).

Workflow inputs, results, activity arguments, memos and failure messages pass through it, so
addresses, amounts and memos never sit in plaintext in Temporal's database. Search attributes
are not encoded (they carry no addresses or amounts). Operators read decoded payloads in the
Web UI through the codec endpoint (POST /codec/decode) that the API serves.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import temporalio.converter
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload

log = logging.getLogger("custody.codec")

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
# What a worker makes of a payload that was not sealed with custody's keys: an encoding no
# converter reads, so the signal carrying it is dropped, the update rejected, the input refused.
REFUSED = b"binary/plaintext-refused"


class EncryptionCodec(temporalio.converter.PayloadCodec):
    """`refuse_plaintext` (the worker's): an unencrypted payload is never passed through, so
    whoever reaches Temporal without the payload keys cannot signal, update or start anything
    (the payload is replaced, not raised on: raising would fail the workflow task over and over
    and wedge the withdrawal instead of ignoring the intruder)."""

    def __init__(self, keys: dict[str, bytes], active_key_id: str, *, refuse_plaintext: bool = False) -> None:
        if active_key_id not in keys:
            raise ValueError(f"active payload key {active_key_id!r} is not among the keys")
        if any(len(k) != 32 for k in keys.values()):
            raise ValueError("payload keys must be 32 bytes (AES-256)")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active = active_key_id
        self._refuse_plaintext = refuse_plaintext

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(p) for p in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(12)
        key_id = self._active.encode()
        sealed = self._keys[self._active].encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(metadata={"encoding": ENCODING, KEY_ID: key_id}, data=nonce + sealed)

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            if self._refuse_plaintext:
                from core import metrics

                metrics.PLAINTEXT_PAYLOADS_REFUSED.inc()
                log.warning("unencrypted payload refused", extra={"encoding": payload.metadata.get("encoding", b"").decode(errors="replace")})
                return Payload(metadata={"encoding": REFUSED})
            return payload  # written before encryption was on (or by another codec): pass through
        key_id = payload.metadata.get(KEY_ID, b"").decode()
        key = self._keys.get(key_id)
        if key is None:
            raise ValueError(f"payload encrypted with unknown key {key_id!r}")
        plain = key.decrypt(payload.data[:12], payload.data[12:], key_id.encode())
        decoded = Payload()
        decoded.ParseFromString(plain)
        return decoded


def codec_from_settings(settings, *, refuse_plaintext: bool = False) -> EncryptionCodec | None:  # type: ignore[no-untyped-def]
    keys = {key_id: base64.b64decode(k.get_secret_value()) for key_id, k in settings.payload_keys.items()}
    if not keys:
        return None
    return EncryptionCodec(keys, settings.payload_key_id, refuse_plaintext=refuse_plaintext)


def data_converter(codec: temporalio.converter.PayloadCodec | None) -> temporalio.converter.DataConverter:
    """The converter every client of ours uses: payloads and failure messages encrypted."""
    if codec is None:
        return temporalio.converter.default()
    return dataclasses.replace(
        temporalio.converter.default(),
        payload_codec=codec,
        failure_converter_class=temporalio.converter.DefaultFailureConverterWithEncodedAttributes,
    )


def payloads_to_json(payloads: Iterable[Payload]) -> dict[str, Any]:
    """Temporal's JSON form of Payloads (what the UI's codec endpoint exchanges)."""
    return {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in payloads
        ]
    }


def payloads_from_json(body: dict[str, Any]) -> list[Payload]:
    return [
        Payload(
            metadata={k: base64.b64decode(v) for k, v in (p.get("metadata") or {}).items()},
            data=base64.b64decode(p.get("data") or ""),
        )
        for p in body.get("payloads") or []
    ]
