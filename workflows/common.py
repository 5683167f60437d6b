"""Retry policies and failure reading shared by the workflows (workflow-safe imports only)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

# Transient failures (RPC down, KMS throttled) are retried until they pass: a withdrawal waits
# visibly in its current step rather than failing. Permanent ones are non-retryable by type.
RETRY_UNTIL_PERMANENT = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)

SHORT_STEP = timedelta(seconds=30)


def failure_of(error: ActivityError) -> tuple[str, str]:
    """(stable error code, message) of a failed activity."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "INTERNAL_ERROR", cause.message
    return "INTERNAL_ERROR", str(cause or error)
