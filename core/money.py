"""Decimal strings at the API edge, integers in the chain's smallest unit everywhere else."""

from __future__ import annotations

import re

from core.errors import InvalidAmount

_DECIMAL_STRING = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")
# No chain custody speaks holds more than a uint256 (and the database column is NUMERIC(78, 0)).
MAX_BASE_UNITS = 2**256 - 1
MAX_AMOUNT_LENGTH = 100


def to_base_units(amount: str, decimals: int) -> int:
    """Parse a plain decimal string ("12.5") into base units, refusing anything lossy.

    Floats, exponents, signs, and more fractional digits than the asset has are rejected
    rather than rounded: silently rounding a withdrawal amount is a loss of money.
    """
    # fullmatch, never match: `$` also matches before a trailing newline ("1.5\n").
    if not isinstance(amount, str) or len(amount) > MAX_AMOUNT_LENGTH or not _DECIMAL_STRING.fullmatch(amount):
        raise InvalidAmount('amount must be a plain decimal string such as "1.25"', amount=str(amount)[:MAX_AMOUNT_LENGTH])
    whole, _, fraction = amount.partition(".")
    if len(fraction) > decimals:
        raise InvalidAmount(f"amount has more than {decimals} decimal places", amount=amount, decimals=decimals)
    units: int = int(whole) * 10**decimals + int((fraction or "0").ljust(decimals, "0") or "0")
    if units <= 0:
        raise InvalidAmount("amount must be greater than zero", amount=amount)
    if units > MAX_BASE_UNITS:
        raise InvalidAmount("amount is larger than any chain can hold (2^256 - 1 base units)", amount=amount)
    return units


def to_decimal_string(units: int, decimals: int) -> str:
    """Render base units as a decimal string without trailing zeros ("1.5", "0.000001", "3").

    Integer arithmetic only: Decimal's default 28-digit context would round uint256 values.
    """
    sign = "-" if units < 0 else ""
    whole, fraction = divmod(abs(units), 10**decimals)
    if decimals == 0 or fraction == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}." + str(fraction).rjust(decimals, "0").rstrip("0")


def canonical_decimal_string(amount: str) -> str:
    """The same amount written one way ("0.250" and "0.25" are "0.25", "01" is "1"), for
    comparing requests; anything that is not a plain decimal string is returned unchanged."""
    if not isinstance(amount, str) or len(amount) > MAX_AMOUNT_LENGTH or not re.fullmatch(r"[0-9]+(\.[0-9]+)?", amount):
        return amount
    whole, _, fraction = amount.partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole
