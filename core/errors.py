"""One rooted error tree with stable codes.

Adapters translate SDK exceptions into these (``raise ... from e``); the worker's activity
interceptor turns them into ``ApplicationError(type=code, non_retryable=...)`` and the API turns
them into ``{"error": {"code", "message", "details"}}``. Nothing else maps errors.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from core.redaction import redact, redact_value


class CustodyError(Exception):
    """Base of every error custody raises on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    permanent: ClassVar[bool] = True

    def __init__(self, message: str = "", **details: Any) -> None:
        # Messages often quote a client library's error, which may hold an RPC URL with its API
        # key: they are redacted here, before reaching an API answer, a Temporal failure or a log.
        message = redact(message or self.code)
        super().__init__(message)
        self.message = message
        self.details = {k: redact_value(v) for k, v in details.items()}


class TransientError(CustodyError):
    """Worth retrying: the same call may succeed later (RPC down, KMS throttled, lock busy)."""

    code = "TRANSIENT_ERROR"
    http_status = 503
    permanent = False


class PermanentError(CustodyError):
    """Retrying the same call cannot succeed; the workflow must decide what to do."""

    code = "PERMANENT_ERROR"
    http_status = 400


# --- input and ownership -------------------------------------------------------------------
class ValidationFailed(PermanentError):
    """The request does not validate: details.errors lists each field and problem."""

    code = "VALIDATION_ERROR"
    http_status = 422


class InvalidAmount(ValidationFailed):
    """Not a positive decimal string within the asset's decimals."""

    code = "INVALID_AMOUNT"


class InvalidRecipient(ValidationFailed):
    """Not an address of this chain, or one that cannot receive this payment."""

    code = "INVALID_RECIPIENT"


class InvalidMemo(ValidationFailed):
    """A memo the chain cannot carry (kind or length)."""

    code = "INVALID_MEMO"


class BelowAccountMinimum(InvalidAmount):
    """The destination account does not exist yet, and a first payment smaller than what
    creates it would fail on chain (Solana: the rent-exempt minimum; Stellar: 1 XLM)."""

    code = "BELOW_ACCOUNT_MINIMUM"


class UnknownAsset(ValidationFailed):
    """An asset this chain is not configured with."""

    code = "UNKNOWN_ASSET"


class UnknownChain(ValidationFailed):
    """A chain this deployment is not configured with."""

    code = "UNKNOWN_CHAIN"


class RecipientNoTrustline(PermanentError):
    """The destination cannot hold this asset yet (Stellar trustline, etc.)."""

    code = "RECIPIENT_NO_TRUSTLINE"
    http_status = 422


class MemoRequired(PermanentError):
    """The destination requires a memo (SEP-29 `config.memo_required`)."""

    code = "MEMO_REQUIRED"
    http_status = 422


class RecipientNotFound(PermanentError):
    """No such custody user, or they have no active wallet on the chain (`to: {handle}`)."""

    code = "RECIPIENT_NOT_FOUND"
    http_status = 404


class WalletNotFound(PermanentError):
    """No such wallet (or not the caller's)."""

    code = "WALLET_NOT_FOUND"
    http_status = 404


class WalletInactive(PermanentError):
    """The wallet is deactivated, failed, or still being created."""

    code = "WALLET_INACTIVE"
    http_status = 409


class WithdrawalNotFound(PermanentError):
    """No such withdrawal (or not the caller's)."""

    code = "WITHDRAWAL_NOT_FOUND"
    http_status = 404


class AlreadyFinal(PermanentError):
    """The withdrawal already ended (e.g. a reset run of a finished workflow): do nothing more."""

    code = "ALREADY_FINAL"
    http_status = 409


class AttemptMayStillLand(PermanentError):
    """A retry of a withdrawal one of whose signed attempts can still land: both could pay."""

    code = "ATTEMPT_MAY_STILL_LAND"
    http_status = 409


class IdempotencyConflict(PermanentError):
    """This Idempotency-Key was used with a different request (amounts compared as numbers)."""

    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


class WalletLabelTaken(PermanentError):
    """The owner has an active wallet with this label on this chain already."""

    code = "WALLET_LABEL_TAKEN"
    http_status = 409


class OperationRefused(PermanentError):
    """An operator action the withdrawal's state does not allow (code says which)."""

    code = "OPERATION_REFUSED"
    http_status = 409

    def __init__(self, code: str, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.code = code  # type: ignore[misc]


class Unauthorized(PermanentError):
    """No credentials, or an unknown, revoked or expired API key or token."""

    code = "UNAUTHORIZED"
    http_status = 401


class Forbidden(PermanentError):
    """An identity without the role or scope the action needs (never for others' objects:
    those answer 404, so ids do not leak)."""

    code = "FORBIDDEN"
    http_status = 403


class CsrfFailed(Forbidden):
    """A console form without its session's CSRF token (or with a wrong one): not from our page."""

    code = "CSRF_FAILED"


class UserBlocked(PermanentError):
    """The user was blocked by an admin: nothing new, and nothing of theirs is signed."""

    code = "USER_BLOCKED"
    http_status = 403


class WalletFrozen(PermanentError):
    """An admin froze the wallet: nothing is signed from it until it is unfrozen."""

    code = "WALLET_FROZEN"
    http_status = 409


class ApprovalNotRecorded(PermanentError):
    """The withdrawal needs a second person, and no approval made through custody's API (by an
    APPROVER who is not the requester) is recorded: a signal sent straight to Temporal approves
    nothing."""

    code = "APPROVAL_NOT_RECORDED"
    http_status = 409


class UserNotFound(PermanentError):
    """No such user."""

    code = "USER_NOT_FOUND"
    http_status = 404


class ApiKeyNotFound(PermanentError):
    """No such API key."""

    code = "API_KEY_NOT_FOUND"
    http_status = 404


class PayloadTooLarge(PermanentError):
    """The request body is larger than the API accepts."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class NotAvailable(PermanentError):
    """A feature that this deployment does not offer (e.g. faucets on a mainnet configuration)."""

    code = "NOT_AVAILABLE"
    http_status = 404


class AlreadyFunded(PermanentError):
    """A faucet that only creates accounts (Stellar's friendbot) was asked to fund one that
    exists: nothing was paid."""

    code = "ALREADY_FUNDED"
    http_status = 409


class RateLimited(PermanentError):
    """Too many requests (or fundings) in the window: Retry-After says when to try again."""

    code = "RATE_LIMITED"
    http_status = 429


# --- money and chain ----------------------------------------------------------------------
class InsufficientFunds(PermanentError):
    """The wallet's spendable balance does not cover the amount, what in-flight withdrawals hold, and the fee."""

    code = "INSUFFICIENT_FUNDS"


class SigningFailed(PermanentError):
    """The signer refused or failed to sign."""

    code = "SIGNING_FAILED"
    http_status = 502


class PolicyViolation(PermanentError):
    """What a key was asked to sign is not the approved intent (or the stored intent was altered):
    nothing is signed."""

    code = "POLICY_VIOLATION"
    http_status = 403


class PolicyBlocked(PermanentError):
    """A policy rule (or an allowlist-only source) refuses this withdrawal; details name the
    rule and the policy version."""

    code = "POLICY_BLOCKED"
    http_status = 403


class LimitExceeded(PermanentError):
    """A velocity limit or per-transaction maximum of the matching rule would be exceeded;
    details say which and what remains."""

    code = "LIMIT_EXCEEDED"
    http_status = 409


class InvalidPolicy(ValidationFailed):
    """A policy document or rule that does not validate."""

    code = "INVALID_POLICY"


class PolicyVersionConflict(PermanentError):
    """The policy changed since the version the change was based on: re-read it and try again."""

    code = "POLICY_VERSION_CONFLICT"
    http_status = 409


class PolicyNotFound(PermanentError):
    """No such policy version or rule."""

    code = "POLICY_NOT_FOUND"
    http_status = 404


class NotAnApprover(PermanentError):
    """The caller is not among the approvers the withdrawal's (or address-book entry's) quorum
    counts: another role or group, the owner or requester, or one who approved already."""

    code = "NOT_AN_APPROVER"
    http_status = 403


class AddressBookEntryNotFound(PermanentError):
    """No such address-book entry."""

    code = "ADDRESS_BOOK_ENTRY_NOT_FOUND"
    http_status = 404


class SubmissionFailed(PermanentError):
    """The network refused the transaction (or a faucet its funding) for a reason retrying cannot fix."""

    code = "SUBMISSION_FAILED"
    http_status = 502


class TransactionReverted(PermanentError):
    """Mined but failed: the slot and the fee are consumed, the transfer did not happen."""

    code = "TRANSACTION_REVERTED"
    http_status = 502


class SlotConsumedExternally(PermanentError):
    """Our nonce/sequence was used by a transaction that is none of our attempts."""

    code = "SLOT_CONSUMED_EXTERNALLY"
    http_status = 500


class ChainUnavailable(TransientError):
    """The chain's node (every configured endpoint) cannot be reached or answered with an error: retried."""

    code = "CHAIN_UNAVAILABLE"


class ChannelsBusy(TransientError):
    """Every channel account of the chain is leased by another withdrawal in flight: the signing
    step waits (retried shortly) for one to be handed back rather than make the wallet its own
    transaction source, which the network admits once per ledger."""

    code = "CHANNELS_BUSY"

    def __init__(self, message: str = "", *, retry_after: timedelta | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        # When to try again: a channel frees within about a ledger, sooner than the retry
        # policy's doubling interval would look again.
        self.retry_after = retry_after


class OnHold(TransientError):
    """A hold placed through the API is active: the signing step waits (retried) until it is
    lifted through the API, whatever the workflow itself was told."""

    code = "ON_HOLD"
    http_status = 409


class RateLimiterUnavailable(TransientError):
    """Redis, which keeps the rate limits, cannot be reached: writes are refused (fail closed)."""

    code = "RATE_LIMITER_UNAVAILABLE"
    http_status = 503


class FeeAboveCap(TransientError):
    """Network fees exceed the configured cap: wait for them to fall rather than overpay."""

    code = "FEE_ABOVE_CAP"


class SignerUnavailable(TransientError):
    """The key's signer (KMS) cannot be reached or throttles: retried."""

    code = "SIGNER_UNAVAILABLE"


class TemporalUnavailable(TransientError):
    """Temporal did not answer (restarting, unreachable, timed out), or the workflow cannot take
    the request now (its workflow task is being retried after a worker died in it): whether an
    earlier try reached the workflow is unknown; sending it again is safe, and its answer tells."""

    code = "TEMPORAL_UNAVAILABLE"


class DatabaseUnavailable(TransientError):
    """PostgreSQL is out of reach (restarting, failing over): nothing was changed; try again."""

    code = "DATABASE_UNAVAILABLE"


class DatabaseNotMigrated(TransientError):
    """PostgreSQL answers but its schema is older than this code: its migrations have not run
    yet (the worker applies them as it starts). Nothing was changed; try again once they have."""

    code = "DATABASE_NOT_MIGRATED"


class UnexpectedError(TransientError):
    """An exception custody did not foresee (a bug, an unmapped RPC answer): retried, counted,
    and alerted after a few attempts rather than retried in silence."""

    code = "UNEXPECTED_ERROR"


class InvalidWebhookUrl(ValidationFailed):
    """A webhook receiver custody will not post to (scheme, form, or a local or metadata address)."""

    code = "INVALID_WEBHOOK_URL"


class WebhookNotFound(PermanentError):
    """No such webhook."""

    code = "WEBHOOK_NOT_FOUND"
    http_status = 404


class WebhookDeliveryNotFound(PermanentError):
    """No such webhook delivery."""

    code = "WEBHOOK_DELIVERY_NOT_FOUND"
    http_status = 404


class WebhookDeliveryInProgress(PermanentError):
    """A redelivery of a delivery still being attempted: it would post the same event twice at once."""

    code = "WEBHOOK_DELIVERY_IN_PROGRESS"
    http_status = 409


class WebhookLimitReached(PermanentError):
    """The owner has as many webhooks as allowed."""

    code = "WEBHOOK_LIMIT_REACHED"
    http_status = 409


class FeeTooLow(PermanentError):
    """The node refused this attempt's fee; a replacement with a higher fee is needed."""

    code = "FEE_TOO_LOW"


ERROR_CODES: dict[str, type[CustodyError]] = {}


def _collect(cls: type[CustodyError]) -> None:
    for sub in cls.__subclasses__():
        ERROR_CODES.setdefault(sub.code, sub)
        _collect(sub)


_collect(CustodyError)


# --- codes that are no class of their own --------------------------------------------------
# An operator action refused by the withdrawal's workflow (an update's ApplicationError type) or
# by the API (OperationRefused(code, ...)); all answer 409.
OPERATOR_REFUSALS: dict[str, str] = {
    "CANCEL_TOO_LATE": "the withdrawal is final or its transfer can no longer be stopped",
    "CANCEL_IN_PROGRESS": "a cancellation is already under way",
    "SELF_APPROVAL": "the requester cannot approve their own withdrawal",
    "ALREADY_APPROVED": "this approver approved already: a quorum needs distinct approvers",
    "NOT_AWAITING_APPROVAL": "the withdrawal is not waiting for an approval",
    "WORKFLOW_NOT_RUNNING": "the withdrawal's workflow is not running",
    "NOT_RETRYABLE": "only FAILED withdrawals can be retried by hand",
}
# A withdrawal's own ending (its `error_code`), never an HTTP answer.
WITHDRAWAL_ENDINGS: dict[str, str] = {
    "APPROVAL_TIMEOUT": "no approval came in time",
    "CANCELLED": "cancelled by an operator or the owner",
    "REJECTED": "rejected by an approver (who and why in its error message); its hold released, nothing sent",
}
# The API's answers outside custody's own errors (api/errors.py, api/edge.py).
API_ANSWERS: dict[str, tuple[int, str]] = {
    "NOT_FOUND": (404, "no such route"),
    "METHOD_NOT_ALLOWED": (405, "the route does not take this method"),
    "HTTP_ERROR": (400, "any other HTTP-level refusal"),
    "INTERNAL_ERROR": (500, "a bug: logged with its trace, never a detail in the answer"),
}


# Modules that define errors of their own next to what raises them (loaded for the catalog).
ERROR_MODULES = ("activities.access", "activities.pools", "api.oidc")


def error_catalog() -> dict[str, tuple[int | None, str, str]]:
    """Every error code custody answers or records, the single source README's table and the
    OpenAPI error answers are made from: code -> (HTTP status or None, kind, meaning)."""
    import importlib

    for module in ERROR_MODULES:
        importlib.import_module(module)
    _collect(CustodyError)  # their classes join ERROR_CODES
    catalog: dict[str, tuple[int | None, str, str]] = {}
    for code, cls in ERROR_CODES.items():
        kind = "retried" if issubclass(cls, TransientError) else "final"
        meaning = " ".join((cls.__doc__ or "").split()).replace("|", "/")
        catalog[code] = (cls.http_status, kind, meaning)
    for code, meaning in OPERATOR_REFUSALS.items():
        catalog[code] = (OperationRefused.http_status, "operator refusal", meaning)
    for code, meaning in WITHDRAWAL_ENDINGS.items():
        catalog[code] = (None, "withdrawal ending", meaning)
    for code, (status, meaning) in API_ANSWERS.items():
        catalog[code] = (status, "final", meaning)
    return dict(sorted(catalog.items()))


def markdown_table() -> str:
    """README's error table (`python -m core.errors` prints it; tests/api/test_error_codes.py keeps
    README equal to it)."""
    rows = ["| code | HTTP | kind | meaning |", "|---|---|---|---|"]
    for code, (status, kind, meaning) in error_catalog().items():
        rows.append(f"| `{code}` | {status or '-'} | {kind} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    # The module imported by its name, not this __main__ copy: the other modules' errors subclass it.
    from core.errors import markdown_table as table

    print(table())
