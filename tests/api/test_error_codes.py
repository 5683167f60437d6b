"""Error codes have one source, core/errors.py (its classes and the catalog of codes that are no
class): README's table is made from it, every code the code base raises or records is in it, and
the OpenAPI document lists each route's error answers from it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.main import create_app
from core.errors import API_ANSWERS, error_catalog, markdown_table
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("activities", "api", "chains", "core", "db", "workflows", "signers", "cli", "models")
# Where a code is written as a string: an update refusal's type, an operator refusal, a
# refusal of a final withdrawal, a withdrawal's ending, an answer built by hand.
RAISED = [
    re.compile(r'type="([A-Z][A-Z_]+)"'),
    re.compile(r'OperationRefused\(\s*"([A-Z][A-Z_]+)"'),
    re.compile(r'_refuse_if_final\([^,]+,\s*"([A-Z][A-Z_]+)"'),
    re.compile(r'_finish\([^)]*?WithdrawalStatus\.\w+,\s*\w+,\s*"([A-Z][A-Z_]+)"'),
    re.compile(r'error_response\(\s*\d+,\s*"([A-Z][A-Z_]+)"'),
    re.compile(r'^    code = "([A-Z][A-Z_]+)"', re.M),  # an error class
    re.compile(r'^\s+OnChainState\.\w+: \("([A-Z][A-Z_]+)"', re.M),  # FAILURE_OF_OUTCOME's (code, message)
]


def readme_table() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- error-codes:begin -->\n(.*?)\n<!-- error-codes:end -->", readme, flags=re.S)
    assert match, "README lost its error-code table markers"
    return match.group(1)


def test_readme_error_table_is_the_catalog() -> None:
    assert readme_table() == markdown_table(), "README's error table differs from core/errors.py: paste the output of `python -m core.errors`"


def codes_written_in_source() -> dict[str, str]:
    found: dict[str, str] = {}
    for package in SOURCES:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for pattern in RAISED:
                for code in pattern.findall(text):
                    found.setdefault(code, str(path.relative_to(ROOT)))
    return found


def test_every_code_the_code_base_raises_is_in_the_catalog() -> None:
    written = codes_written_in_source()
    # the scan finds the codes of each kind (so a broken pattern cannot pass in silence)
    for code in (
        "SELF_APPROVAL",
        "NOT_RETRYABLE",
        "CANCELLED",
        "APPROVAL_TIMEOUT",
        "TRANSACTION_REVERTED",
        "INTERNAL_ERROR",
        "WALLET_NOT_FOUND",
        "BELOW_ACCOUNT_MINIMUM",
        "ALREADY_FUNDED",
        "CANCEL_TOO_LATE",
    ):
        assert code in written, code
    missing = {code: where for code, where in written.items() if code not in error_catalog()}
    assert not missing, f"codes raised but not in core/errors.py's catalog: {missing}"


def test_the_catalog_names_only_codes_in_use() -> None:
    written = codes_written_in_source()
    unused = set(error_catalog()) - set(written) - set(API_ANSWERS)
    assert not unused, f"codes in the catalog that nothing raises: {unused}"


@pytest.fixture(scope="module")
def openapi() -> dict:
    return create_app(Settings()).openapi()


def test_each_route_lists_its_error_answers(openapi: dict) -> None:
    catalog = error_catalog()
    operations = {f"{method.upper()} {path}": op for path, ops in openapi["paths"].items() for method, op in ops.items()}
    for name, op in operations.items():
        errors = {status: answer for status, answer in op["responses"].items() if status[0] in "45"}
        if name.split(" ")[1].startswith("/v1/"):
            assert errors, f"{name} lists no error answers"
        for status, answer in errors.items():
            assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, name
            for code in answer["description"].split(", "):
                assert catalog[code][0] == int(status), (name, code, status)

    def codes(name: str) -> set[str]:
        return {c for s, a in operations[name]["responses"].items() if s[0] in "45" for c in a["description"].split(", ")}

    assert {
        "UNAUTHORIZED",
        "IDEMPOTENCY_CONFLICT",
        "BELOW_ACCOUNT_MINIMUM",
        "INVALID_RECIPIENT",
        "UNKNOWN_ASSET",
        "WALLET_NOT_FOUND",
        "VALIDATION_ERROR",
    } <= codes("POST /v1/withdrawals")
    assert {"ALREADY_FUNDED", "INVALID_AMOUNT", "RECIPIENT_NO_TRUSTLINE", "RATE_LIMITED", "NOT_AVAILABLE"} <= codes(
        "POST /v1/wallets/{wallet_id}/fund"
    )
    assert {"WITHDRAWAL_NOT_FOUND", "SELF_APPROVAL", "ALREADY_APPROVED", "NOT_AN_APPROVER", "WORKFLOW_NOT_RUNNING"} <= codes(
        "POST /v1/withdrawals/{withdrawal_id}/approve"
    )
    assert "WITHDRAWAL_NOT_FOUND" in codes("GET /v1/withdrawals/{withdrawal_id}")
    assert "422" not in operations["GET /v1/policy"]["responses"] or "VALIDATION_ERROR" in codes("GET /v1/policy")
