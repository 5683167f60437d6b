"""Payload encryption: unit round trip and rotation, nothing readable in Temporal's raw
history, and the UI's codec endpoint decoding it back for operators."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.exceptions import InvalidTag
from temporalio.api.common.v1 import Payload

from core.codec import EncryptionCodec, payloads_from_json, payloads_to_json
from tests.conftest import create_wallet, fund, random_address, wait_for_status, withdraw


def _payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps({"to": text}).encode())


async def test_round_trip_rotation_and_tamper_detection():
    old_key, new_key = os.urandom(32), os.urandom(32)
    before = EncryptionCodec({"k1": old_key}, "k1")
    sealed = await before.encode([_payload("0xsecret")])
    assert b"0xsecret" not in sealed[0].SerializeToString() and sealed[0].metadata["encryption-key-id"] == b"k1"

    rotated = EncryptionCodec({"k1": old_key, "k2": new_key}, "k2")
    assert (await rotated.decode(sealed))[0] == _payload("0xsecret")
    assert (await rotated.encode([_payload("x")]))[0].metadata["encryption-key-id"] == b"k2"
    plain = _payload("not encrypted")
    assert (await rotated.decode([plain]))[0] == plain

    tampered = Payload()
    tampered.CopyFrom(sealed[0])
    tampered.data = tampered.data[:-1] + bytes([tampered.data[-1] ^ 1])
    with pytest.raises(InvalidTag):
        await rotated.decode([tampered])
    with pytest.raises(ValueError, match="unknown key"):
        await EncryptionCodec({"k2": new_key}, "k2").decode(sealed)


async def test_raw_history_holds_no_plaintext_and_the_codec_endpoint_decodes_it(api, temporal_env):
    wallet = await create_wallet(api)
    await fund(api, wallet, "0.1")
    failed = (await withdraw(api, wallet, random_address(), "5")).json()
    done = await wait_for_status(api, failed["id"], {"FAILED"})
    assert done["error_code"] == "INSUFFICIENT_FUNDS"

    plain_client = temporal_env.client  # no codec: what Temporal's database holds
    address = wallet["address"][2:].lower()
    for workflow_id in (f"wallet-{wallet['id']}", f"withdrawal-{failed['id']}"):
        raw = (await plain_client.get_workflow_handle(workflow_id).fetch_history()).to_json()
        assert address not in raw.lower()
        assert "balance does not cover" not in raw  # failure messages are encoded too

    history = await plain_client.get_workflow_handle(f"wallet-{wallet['id']}").fetch_history()
    result_event = history.events[-1].workflow_execution_completed_event_attributes
    response = await api.post(
        "/codec/decode",
        json=payloads_to_json(result_event.result.payloads),
        headers={"Origin": "http://127.0.0.1:8233"},
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://127.0.0.1:8233"
    decoded = payloads_from_json(response.json())
    assert json.loads(decoded[0].data)["address"] == wallet["address"]
    garbage = {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"binary/encrypted").decode(), "encryption-key-id": base64.b64encode(b"dev-1").decode()},
                "data": base64.b64encode(os.urandom(40)).decode(),
            }
        ]
    }
    assert (await api.post("/codec/decode", json=garbage)).status_code == 422


async def test_codec_endpoint_requires_its_token_when_configured(api, settings):
    from pydantic import SecretStr

    api._transport.app.state.custody.settings = settings.model_copy(update={"codec_auth_token": SecretStr("t0ken")})
    body = payloads_to_json([_payload("x")])
    assert (await api.post("/codec/encode", json=body)).status_code == 401
    assert (await api.post("/codec/encode", json=body, headers={"Authorization": "Bearer t0ken"})).status_code == 200
