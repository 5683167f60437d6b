"""The one place where custody errors become Temporal failures, plus the crash hook for tests."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core import metrics
from core.errors import ChannelsBusy, CustodyError, DatabaseUnavailable, UnexpectedError
from db.unavailable import database_unavailable

# Called once an activity has failed with an unexpected error `alert_after` times:
# (workflow id, activity name, message). It keeps being retried all the same: a fix deployed to
# the workers lets it pass, and no withdrawal is ever failed by a bug.
StuckAlert = Callable[[str, str, str], Awaitable[object]]

# The step after which the chaos hook exits the worker (tests only), for the activity running.
_exit_after: ContextVar[str | None] = ContextVar("custody_chaos_exit_after", default=None)


def crash_point(step: str) -> None:
    """A side effect committed inside an activity that has more than one (sign_and_broadcast:
    the signature, then the send). With the chaos hook set to `step`, the worker exits here, as
    it exits after a whole activity of that name, so a test crashes between the two."""
    if _exit_after.get() == step:
        activity.logger.warning("chaos: exiting the worker process after %s", step)
        os._exit(137)


class _ActivityInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, exit_after: str | None, alert_after: int, on_stuck: StuckAlert | None) -> None:
        super().__init__(next)
        self._exit_after = exit_after
        self._alert_after = alert_after
        self._on_stuck = on_stuck

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        _exit_after.set(self._exit_after)  # this activity's own task: its context only
        try:
            result = await self.next.execute_activity(input)
        except CustodyError as e:
            metrics.ACTIVITY_ERRORS.labels(activity=name, code=e.code, permanent=str(e.permanent)).inc()
            # A wait the design expects (every channel leased) is no failure: logged at debug level.
            waiting = isinstance(e, ChannelsBusy)
            activity.logger.log(
                logging.DEBUG if waiting else logging.WARNING,
                "activity failed",
                extra={"error_code": e.code, "permanent": e.permanent, "error": e.message},
            )
            raise ApplicationError(
                e.message,
                e.details or None,
                type=e.code,
                non_retryable=e.permanent,
                next_retry_delay=e.retry_after if isinstance(e, ChannelsBusy) else None,
                category=ApplicationErrorCategory.BENIGN if waiting else ApplicationErrorCategory.UNSPECIFIED,
            ) from e
        except Exception as e:
            if database_unavailable(e):
                # Foreseen: PostgreSQL restarting or failing over. Retried until it is back.
                metrics.ACTIVITY_ERRORS.labels(activity=name, code=DatabaseUnavailable.code, permanent="False").inc()
                activity.logger.warning("activity failed: database unavailable", extra={"error_code": DatabaseUnavailable.code, "error": repr(e)})
                raise ApplicationError(f"PostgreSQL is out of reach ({type(e).__name__}): retried", type=DatabaseUnavailable.code) from None
            failure = self._unexpected(name, e)
            if activity.info().attempt == self._alert_after and self._on_stuck is not None:
                try:
                    await self._on_stuck(activity.info().workflow_id or "", name, failure.message)
                except Exception:  # the alert is best effort; the failure below is what matters
                    activity.logger.exception("could not record the stuck-activity alert")
            raise failure from e
        # Simulates a worker crash after the activity's side effects committed but before
        # Temporal recorded its completion: the retry on the next worker must find them.
        crash_point(name)
        return result

    def _unexpected(self, name: str, error: Exception) -> ApplicationError:
        """A bug or an unmapped answer (assert, KeyError, an RPC error no adapter translates):
        counted by type, logged with its traceback, retried with a stable code, and alerted once
        it has failed `alert_after` times instead of retrying in silence."""
        info = activity.info()
        kind = type(error).__name__
        metrics.ACTIVITY_UNEXPECTED_ERRORS.labels(activity=name, exception=kind).inc()
        metrics.ACTIVITY_ERRORS.labels(activity=name, code=UnexpectedError.code, permanent="False").inc()
        stuck = info.attempt >= self._alert_after
        if stuck:
            metrics.ACTIVITY_STUCK.labels(activity=name).inc()
        activity.logger.log(
            logging.ERROR if stuck else logging.WARNING,
            "activity failed with an unexpected error" + (" (alert: still failing)" if stuck else ""),
            exc_info=error,
            extra={"error_code": UnexpectedError.code, "exception": kind, "attempt": info.attempt, "workflow_id": info.workflow_id},
        )
        # The message is the exception's type only: its text may carry an RPC URL or other secret.
        return ApplicationError(
            f"unexpected {kind} in {name} (attempt {info.attempt})",
            {"exception": kind, "attempt": info.attempt},
            type=UnexpectedError.code,
            non_retryable=False,
        )


class CustodyWorkerInterceptor(Interceptor):
    def __init__(self, exit_after_activity: str | None = None, *, alert_after_attempts: int = 5, on_stuck: StuckAlert | None = None) -> None:
        self._exit_after = exit_after_activity
        self._alert_after = alert_after_attempts
        self._on_stuck = on_stuck

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next, self._exit_after, self._alert_after, self._on_stuck)
