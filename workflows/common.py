"""Retry policies and failure reading shared by the workflows (workflow-safe imports only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
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

# An activity method (self, one argument) -> its result, as workflow.execute_activity_method types it.
SelfT = TypeVar("SelfT")
ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")
ActivityMethod = Callable[[SelfT, ArgT], Awaitable[ResultT]]


async def short_step(activity: ActivityMethod[SelfT, ArgT, ResultT], arg: ArgT) -> ResultT:
    """A short activity, retried until it passes or fails permanently."""
    return await workflow.execute_activity_method(activity, arg, start_to_close_timeout=SHORT_STEP, retry_policy=RETRY_UNTIL_PERMANENT)


def failure_of(error: ActivityError) -> tuple[str, str]:
    """(stable error code, message) of a failed activity."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "INTERNAL_ERROR", cause.message
    return "INTERNAL_ERROR", str(cause or error)
