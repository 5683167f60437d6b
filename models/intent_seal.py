"""The seal of a withdrawal's intent: HMAC-SHA256, under a server secret, of what was requested
(and later approved): who, from which wallet, on which chain, what kind, which asset, to whom, how
much, with which memo. Written when the row is created; the signing guard recomputes it from the
row before any key signs, so a row altered afterwards (by SQL, a bug, a compromised process without
the key) is refused instead of signed. A sweep's amount is custody's to fix at reserve time (all
the wallet holds), so a sweep seals "everything", not a number."""

from __future__ import annotations

import hashlib
import hmac
import json

from models.db import Withdrawal


def intent_seal(key: bytes, withdrawal: Withdrawal) -> str:
    fields = [
        "custody-intent-v1",
        withdrawal.id,
        withdrawal.owner,
        withdrawal.wallet_id,
        withdrawal.chain,
        withdrawal.kind,
        withdrawal.asset,
        withdrawal.destination,
        "everything" if withdrawal.sweep else str(int(withdrawal.amount)),
        withdrawal.memo_type or "",
        withdrawal.memo_value or "",
    ]
    return hmac.new(key, json.dumps(fields, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()


def seal(key: bytes, withdrawal: Withdrawal) -> Withdrawal:
    """Seal a new row in place (all its fields set, its id included); returns it."""
    withdrawal.intent_seal = intent_seal(key, withdrawal)
    return withdrawal


def seal_holds(key: bytes, withdrawal: Withdrawal) -> bool:
    return withdrawal.intent_seal is not None and hmac.compare_digest(withdrawal.intent_seal, intent_seal(key, withdrawal))
