"""Pure units: money parsing, EVM address rules, settings guards, log redaction."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from chains.evm import EvmChain
from core.errors import InvalidAmount, InvalidRecipient
from core.logs import JsonFormatter
from core.money import to_base_units, to_decimal_string
from core.settings import EvmChainSettings, Settings, SolanaChainSettings, StellarChainSettings


@pytest.mark.parametrize(
    ("text", "decimals", "units"),
    [
        ("1", 18, 10**18),
        ("0.000001", 6, 1),
        ("12.5", 6, 12_500_000),
        ("115792089237316195423570985008687907853269984665640564039457.584007913129639935", 18, 2**256 - 1),
    ],
)
def test_decimal_strings_become_exact_base_units(text, decimals, units):
    assert to_base_units(text, decimals) == units
    assert to_decimal_string(units, decimals) == text


@pytest.mark.parametrize("text", ["0", "0.0", "-1", "1e18", "1.", ".5", " 1", "1,5", "01", "0.0000001", "NaN", ""])
def test_lossy_or_malformed_amounts_are_refused(text):
    with pytest.raises(InvalidAmount):
        to_base_units(text, 6)


def test_evm_addresses_are_checksummed_and_bad_checksums_refused():
    chain = EvmChain("t", EvmChainSettings(chain_id=1, rpc_url="http://127.0.0.1:1"))
    good = "0x52908400098527886E0F7030069857D2E4169EE7"
    assert chain.normalize_address(good.lower()) == good
    assert chain.normalize_address(good) == good
    with pytest.raises(InvalidRecipient):
        chain.normalize_address("0x52908400098527886e0F7030069857D2E4169EE7")
    with pytest.raises(InvalidRecipient):
        chain.normalize_address("0x" + "00" * 20)


def test_production_refuses_development_secrets_and_faucets(monkeypatch):
    monkeypatch.setenv("CUSTODY_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="KEYSTORE_KEK"):
        Settings()
    monkeypatch.setenv("CUSTODY_KEYSTORE_KEK", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYiE=")
    # (Development API keys are refused by the API at start, from the database: test_access.py.)
    with pytest.raises(ValidationError, match="PAYLOAD_KEYS"):
        Settings()
    monkeypatch.setenv("CUSTODY_PAYLOAD_KEYS", '{"p1": "cGF5bG9hZC1rZXktcGF5bG9hZC1rZXktcGF5bG9hZDE="}')
    monkeypatch.setenv("CUSTODY_PAYLOAD_KEY_ID", "p1")
    with pytest.raises(ValidationError, match="CODEC_AUTH_TOKEN"):
        Settings()
    monkeypatch.setenv("CUSTODY_CODEC_AUTH_TOKEN", "ui-token")
    with pytest.raises(ValidationError, match="INTENT_SEAL_KEY"):
        Settings()
    # The dev constant is refused by value, however it is written (padding, whitespace).
    monkeypatch.setenv("CUSTODY_INTENT_SEAL_KEY", " Y3VzdG9keS1kZXYtb25seS1pbnRlbnQtc2VhbC1rZXk= \n")
    with pytest.raises(ValidationError, match="INTENT_SEAL_KEY"):
        Settings()
    monkeypatch.setenv("CUSTODY_INTENT_SEAL_KEY", "aW50ZW50LXNlYWwta2V5LWludGVudC1zZWFsLWtleS0zMiE=")
    with pytest.raises(ValidationError, match="faucets"):
        Settings()
    monkeypatch.setenv("CUSTODY_CHAINS", '{"polygon": {"chain_id": 137, "rpc_url": "http://x", "native_symbol": "POL"}}')
    settings = Settings()
    assert settings.chain("POLYGON").native_symbol == "POL"


def test_kek_must_be_32_bytes(monkeypatch):
    monkeypatch.setenv("CUSTODY_KEYSTORE_KEK", "c2hvcnQ=")
    with pytest.raises(ValidationError, match="32 bytes"):
        Settings()


def test_json_logs_carry_workflow_and_withdrawal_ids_and_redact_secrets():
    record = logging.makeLogRecord(
        {
            "msg": "signed",
            "levelname": "INFO",
            "name": "t",
            "temporal_activity": {"workflow_id": "withdrawal-abc", "activity_type": "sign_transfer", "attempt": 2},
            "private_key": "deadbeef",
            "tx_hash": "0x1",
        }
    )
    entry = json.loads(JsonFormatter().format(record))
    assert entry["workflow_id"] == "withdrawal-abc" and entry["withdrawal_id"] == "abc"
    assert entry["activity_type"] == "sign_transfer" and entry["tx_hash"] == "0x1"
    assert entry["private_key"] == "[redacted]"


@pytest.mark.parametrize(
    ("wait", "bump_after", "left_in_step", "expected"),
    [
        (2.0, 20.0, 30.0, 2.0),  # the chain's setting
        (2.0, 1.0, 30.0, 1.0),  # never past the bump delay: the confirmation loop's business
        (30.0, 60.0, 30.0, 25.0),  # never into the step's last 5 s: a timed-out step would send again
        (30.0, 60.0, 4.0, 0.0),  # a slow signature used the step up: no wait at all
        (0.0, 20.0, 30.0, 0.0),  # off
    ],
)
def test_the_send_steps_finality_wait_stays_inside_the_bump_delay_and_the_steps_timeout(wait, bump_after, left_in_step, expected):
    from activities.withdrawals import finality_wait_after_send

    settings = EvmChainSettings(chain_id=1, rpc_url="http://node", finality_wait_in_send_step_seconds=wait, fee_bump_after_seconds=bump_after)
    assert finality_wait_after_send(settings, left_in_step) == expected


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (lambda **kw: EvmChainSettings(chain_id=1, rpc_url="http://node", finality="depth", **kw), 2.0),
        (lambda **kw: EvmChainSettings(chain_id=1, rpc_url="http://node", finality="finalized", **kw), 0.0),
        (lambda **kw: EvmChainSettings(chain_id=1, rpc_url="http://node", **kw), 0.0),  # auto: the finalized block
        (lambda **kw: SolanaChainSettings(rpc_url="http://node", commitment="confirmed", **kw), 2.0),
        (lambda **kw: SolanaChainSettings(rpc_url="http://node", **kw), 0.0),  # finalized: 32 slots on
        (lambda **kw: StellarChainSettings(horizon_url="http://node", network_passphrase="x", **kw), 2.0),  # a closed ledger is final
    ],
)
def test_the_send_step_looks_for_finality_only_where_finality_can_come_within_its_look(settings, expected):
    """Unset, the look is off where finality trails the block by design (a finalized checkpoint
    or commitment: it would only hold the step and poll the node); a value given stands."""
    assert settings().finality_wait_in_send_step_seconds == expected
    assert settings(finality_wait_in_send_step_seconds=1.5).finality_wait_in_send_step_seconds == 1.5
