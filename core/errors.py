"""One rooted error tree with stable codes.

Adapters translate SDK exceptions into these (``raise ... from e``); the worker's activity
interceptor turns them into ``ApplicationError(type=code, non_retryable=...)`` and the API turns
them into ``{"error": {"code", "message", "details"}}``. Nothing else maps errors.
"""

from __future__ import annotations

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
    code = "VALIDATION_ERROR"
    http_status = 422


class InvalidAmount(ValidationFailed):
    code = "INVALID_AMOUNT"


class InvalidRecipient(ValidationFailed):
    code = "INVALID_RECIPIENT"


class InvalidMemo(ValidationFailed):
    code = "INVALID_MEMO"


class UnknownAsset(ValidationFailed):
    code = "UNKNOWN_ASSET"


class UnknownChain(ValidationFailed):
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
    code = "RECIPIENT_NOT_FOUND"
    http_status = 404


class WalletNotFound(PermanentError):
    code = "WALLET_NOT_FOUND"
    http_status = 404


class WalletInactive(PermanentError):
    code = "WALLET_INACTIVE"
    http_status = 409


class WithdrawalNotFound(PermanentError):
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
    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


class WalletLabelTaken(PermanentError):
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
    code = "USER_NOT_FOUND"
    http_status = 404


class ApiKeyNotFound(PermanentError):
    code = "API_KEY_NOT_FOUND"
    http_status = 404


class PayloadTooLarge(PermanentError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class NotAvailable(PermanentError):
    """A feature that this deployment does not offer (e.g. faucets on a mainnet configuration)."""

    code = "NOT_AVAILABLE"
    http_status = 404


class RateLimited(PermanentError):
    code = "RATE_LIMITED"
    http_status = 429


# --- money and chain ----------------------------------------------------------------------
class InsufficientFunds(PermanentError):
    code = "INSUFFICIENT_FUNDS"


class SigningFailed(PermanentError):
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
    code = "ADDRESS_BOOK_ENTRY_NOT_FOUND"
    http_status = 404


class SubmissionFailed(PermanentError):
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
    code = "CHAIN_UNAVAILABLE"


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
    code = "SIGNER_UNAVAILABLE"


class TemporalUnavailable(TransientError):
    """Temporal did not answer (restarting, unreachable, timed out): whether the request reached
    the workflow is unknown; sending it again is safe, and its answer tells."""

    code = "TEMPORAL_UNAVAILABLE"


class DatabaseUnavailable(TransientError):
    """PostgreSQL is out of reach (restarting, failing over): nothing was changed; try again."""

    code = "DATABASE_UNAVAILABLE"


class UnexpectedError(TransientError):
    """An exception custody did not foresee (a bug, an unmapped RPC answer): retried, counted,
    and alerted after a few attempts rather than retried in silence."""

    code = "UNEXPECTED_ERROR"


class InvalidWebhookUrl(ValidationFailed):
    """A webhook receiver custody will not post to (scheme, form, or a local or metadata address)."""

    code = "INVALID_WEBHOOK_URL"


class WebhookNotFound(PermanentError):
    code = "WEBHOOK_NOT_FOUND"
    http_status = 404


class WebhookDeliveryNotFound(PermanentError):
    code = "WEBHOOK_DELIVERY_NOT_FOUND"
    http_status = 404


class WebhookDeliveryInProgress(PermanentError):
    """A redelivery of a delivery still being attempted: it would post the same event twice at once."""

    code = "WEBHOOK_DELIVERY_IN_PROGRESS"
    http_status = 409


class WebhookLimitReached(PermanentError):
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
