"""The signing guard: no key signs anything but the approved intent.

Before a key signs (a withdrawal, its fee bump, cancellation or re-sign, a sweep, a pool move, a
channel funding, a trustline, a gap fill) the chain adapter shows the guard the exact unsigned bytes
(chains.base.approve_before_signing). The guard decodes them with the chain's own library
(`Chain.describe_unsigned`) and compares what they do with what the database says was requested:

- the stored intent is the one requested: its seal (models/intent_seal.py) holds;
- the message to sign is the one those bytes produce (no signing a different digest);
- the transaction takes the claimed slot (nonce / sequence) of the expected fee payer;
- its fee is within the chain's configured cap;
- the value it moves is exactly the intent's: asset, source (the wallet), destination, amount
  (a cancellation or gap fill moves 0 to the wallet itself; a sweep moves everything to the
  destination; a trustline moves nothing); its memo is the intent's.

Anything else is refused with POLICY_VIOLATION: counted, alerted on the withdrawal, and nothing is
signed. The guarded signer also refuses any message it was not shown this way, so an adapter that
skipped the check cannot get a signature either (fail closed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chains.base import Chain, DigestSigner, Memo, Movement, SigningRequest
from core import metrics
from core.errors import PolicyViolation
from models.db import Withdrawal
from models.intent_seal import seal_holds

log = logging.getLogger(__name__)

# What the signature is for (the row's kind and the attempt's purpose decide it).
TRANSFER, CANCEL, SWEEP, TRUSTLINE = "TRANSFER", "CANCEL", "SWEEP", "TRUSTLINE"


@dataclass(frozen=True)
class Expectation:
    """What the database approved for this one signature."""

    purpose: str  # TRANSFER | CANCEL (0 to itself: cancellation, gap fill) | SWEEP | TRUSTLINE
    wallet: str  # the value's source
    fee_payer: str  # whose slot it takes: the wallet, or its Stellar channel account
    sequence: int | None  # the claimed slot; None where the chain has none (Solana)
    asset: str | None  # contract / mint / CODE:ISSUER; None native
    destination: str
    amount: int
    memo: Memo | None
    sweep_total: int | None = None  # a sweep: amount + fee fixed at reserve time


def violations(chain: Chain, request: SigningRequest, expected: Expectation) -> list[str]:
    """Every way `request` differs from `expected` (empty: it is the approved intent)."""
    found: list[str] = []
    if not request.fee_within_cap:
        found.append(f"fee {request.max_fee} is above the configured cap")
    if expected.sequence is not None and request.sequence != expected.sequence:
        found.append(f"slot {request.sequence} is not the claimed {expected.sequence}")
    if request.fee_payer and request.fee_payer != expected.fee_payer:
        found.append(f"fee payer {request.fee_payer} is not {expected.fee_payer}")
    if request.memo != (expected.memo if expected.purpose == TRANSFER else None):
        found.append("the memo is not the requested one")
    movements = [m if m.source else Movement(m.asset, expected.wallet, m.destination, m.amount) for m in request.movements]
    if any(m.source != expected.wallet for m in movements):
        found.append("value would leave an account other than the wallet")
    if expected.purpose == TRUSTLINE:
        if movements or request.trustline != (expected.asset, expected.wallet):
            found.append("not the wallet's trustline for the requested asset")
        return found
    if request.trustline is not None:
        found.append("an unrequested trustline")
    if expected.purpose == CANCEL:
        if movements != [Movement(None, expected.wallet, expected.wallet, 0)]:
            found.append("a cancellation moves nothing but 0 to the wallet itself")
    elif expected.purpose == SWEEP:
        native = [m for m in movements if m.asset is None]
        if any(m.destination != expected.destination for m in movements) or len(native) != 1:
            found.append("a sweep moves everything to the requested destination and nowhere else")
        elif native[0].amount is not None and expected.sweep_total is not None:
            if chain.replaceable_in_slot:  # EVM: value + fee is the total fixed at reserve time
                if native[0].amount + request.max_fee != expected.sweep_total:
                    found.append("the sweep's value and fee do not add up to the reserved total")
            elif native[0].amount != expected.amount or request.max_fee > expected.sweep_total - expected.amount:
                found.append("the sweep's amount or fee is not the one reserved")
    else:
        wanted = Movement(expected.asset, expected.wallet, expected.destination, expected.amount)
        if [_canonical(m) for m in movements] != [_canonical(wanted)]:
            found.append(f"moves {movements} instead of {expected.amount} {expected.asset or 'native'} to {expected.destination}")
    return found


def _canonical(movement: Movement) -> Movement:
    """EVM addresses compare case-insensitively (EIP-55 is only a checksum)."""

    def norm(value: str | None) -> str | None:
        return value.lower() if value is not None and value.startswith("0x") else value

    return Movement(norm(movement.asset), norm(movement.source) or "", norm(movement.destination) or "", movement.amount)


class GuardedSigner:
    """A DigestSigner that signs only messages whose unsigned bytes it checked."""

    def __init__(self, sign: DigestSigner, chain: Chain, expected: Expectation, on_refusal) -> None:  # type: ignore[no-untyped-def]
        self._sign = sign
        self._chain = chain
        self._expected = expected
        self._on_refusal = on_refusal
        self._approved: set[bytes] = set()

    async def check(self, message: bytes, unsigned: bytes) -> None:
        try:
            request = self._chain.describe_unsigned(unsigned)
        except PolicyViolation as e:
            await self._refuse([e.message])
        found = [] if request.message == message else ["the message to sign is not the one these bytes produce"]
        found += violations(self._chain, request, self._expected)
        if found:
            await self._refuse(found)
        self._approved.add(message)

    async def __call__(self, message: bytes) -> bytes:
        if message not in self._approved:
            await self._refuse(["asked to sign bytes the guard was never shown"])
        return await self._sign(message)

    async def _refuse(self, reasons: list[str]) -> None:
        metrics.SIGNING_REFUSED.labels(chain=self._chain.name).inc()
        log.error("signing refused: not the approved intent", extra={"reasons": reasons})
        await self._on_refusal("; ".join(reasons))
        raise PolicyViolation("refused to sign: " + "; ".join(reasons))


def require_seal(key: bytes, withdrawal: Withdrawal) -> None:
    if not seal_holds(key, withdrawal):
        raise PolicyViolation(
            "the stored intent does not match its seal: the withdrawal was altered after it was requested",
            withdrawal_id=withdrawal.id,
        )
