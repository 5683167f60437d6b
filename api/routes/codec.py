"""Codec endpoint for the Temporal Web UI (`--ui-codec-endpoint http://<api>/codec`): the UI
posts encrypted payloads and shows operators the decoded ones. CORS allows only the UI origin;
with CUSTODY_CODEC_AUTH_TOKEN set, the UI must send it as a bearer token."""

from __future__ import annotations

import binascii
import hmac
from typing import Annotated

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from api.deps import StateDep
from core.codec import codec_from_settings, payloads_from_json, payloads_to_json
from core.errors import NotAvailable, Unauthorized, ValidationFailed

router = APIRouter(prefix="/codec", tags=["codec"])


class PayloadJson(BaseModel):
    """One Temporal Payload in its JSON form: base64 metadata values and data."""

    metadata: dict[str, str] = Field(default_factory=dict)
    data: str = ""


class Payloads(BaseModel):
    payloads: list[PayloadJson] = Field(default_factory=list, max_length=1000)


def _payloads(body: Payloads):  # type: ignore[no-untyped-def]
    try:
        return payloads_from_json(body.model_dump())
    except (binascii.Error, ValueError) as e:
        raise ValidationFailed("payloads must carry base64 metadata and data") from e


def _codec(state: StateDep, authorization: str | None):  # type: ignore[no-untyped-def]
    token = state.settings.codec_auth_token.get_secret_value()
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("codec endpoint needs its bearer token")
    codec = codec_from_settings(state.settings)
    if codec is None:
        raise NotAvailable("payload encryption is off")
    return codec


@router.post("/encode")
async def encode(body: Payloads, state: StateDep, authorization: Annotated[str | None, Header()] = None) -> dict:
    codec = _codec(state, authorization)
    return payloads_to_json(await codec.encode(_payloads(body)))


@router.post("/decode")
async def decode(body: Payloads, state: StateDep, authorization: Annotated[str | None, Header()] = None) -> dict:
    codec = _codec(state, authorization)
    payloads = _payloads(body)
    try:
        return payloads_to_json(await codec.decode(payloads))
    except Exception as e:  # wrong key or tampered data: say so, never guess
        raise ValidationFailed("payloads cannot be decoded with the configured keys") from e
