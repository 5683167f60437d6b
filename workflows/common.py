"""Retry policies and failure reading shared by the workflows (workflow-safe imports only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, RetryState

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


# A local step is tried once inside the workflow task. A step that fails transiently (a database
# or node outage) carries on as a server activity (see local_step): retrying it locally would hold
# the workflow task, and the worker's shutdown, through every backoff (core keeps a local
# activity's retries going through a shutdown; a SIGTERM then took about 30 s to stop the worker).
LOCAL_ATTEMPTS = RetryPolicy(maximum_attempts=1)


async def local_step(activity: ActivityMethod[SelfT, ArgT, ResultT], arg: ArgT, *, before_handing_over: Callable[[], None] | None = None) -> ResultT:
    """A short activity run as a local activity: by the worker running the workflow task, with no
    trip through the server (no task to schedule, poll and complete, no workflow task after it),
    its result recorded in the history as one marker. A worker that dies meanwhile loses its
    workflow task and the next worker runs the step again, so only idempotent steps qualify, as
    for every activity here.

    A permanent failure ends it as it would end the activity. A transient one is handed to
    `short_step`: retried by the server until it passes, shown in the
    Web UI as a pending activity with its attempts and last failure, and never holding a workflow
    task (nor a worker's shutdown) while it waits; `before_handing_over` is called first."""
    try:
        return await workflow.execute_local_activity_method(activity, arg, start_to_close_timeout=SHORT_STEP, retry_policy=LOCAL_ATTEMPTS)
    except FailureError as error:
        # A local activity's failure reaches the workflow bare (temporalio 1.35), where a server
        # activity's arrives as the cause of an ActivityError: read both alike.
        failure = error.cause if isinstance(error, ActivityError) else error
        if isinstance(failure, ApplicationError) and failure.non_retryable:
            if isinstance(error, ActivityError):
                raise
            raise ActivityError(
                f"local activity {getattr(activity, '__name__', '')} failed",
                scheduled_event_id=0,
                started_event_id=0,
                identity="",
                activity_type=getattr(activity, "__name__", ""),
                activity_id="",
                retry_state=RetryState.NON_RETRYABLE_FAILURE,
            ) from failure
    if before_handing_over is not None:
        before_handing_over()
    return await short_step(activity, arg)


def failure_of(error: ActivityError) -> tuple[str, str]:
    """(stable error code, message) of a failed activity."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "INTERNAL_ERROR", cause.message
    return "INTERNAL_ERROR", str(cause or error)
