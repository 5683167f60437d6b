"""The one place where custody errors become Temporal failures, plus the crash hook for tests."""

from __future__ import annotations

import os
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from core import metrics
from core.errors import CustodyError


class _ActivityInbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, exit_after: str | None) -> None:
        super().__init__(next)
        self._exit_after = exit_after

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        try:
            result = await self.next.execute_activity(input)
        except CustodyError as e:
            metrics.ACTIVITY_ERRORS.labels(activity=name, code=e.code, permanent=str(e.permanent)).inc()
            activity.logger.warning(
                "activity failed", extra={"error_code": e.code, "permanent": e.permanent, "error": e.message}
            )
            raise ApplicationError(
                e.message, e.details or None, type=e.code, non_retryable=e.permanent
            ) from e
        if self._exit_after and name == self._exit_after:
            # Simulates a worker crash after the activity's side effects committed but before
            # Temporal recorded its completion: the retry on the next worker must find them.
            activity.logger.warning("chaos: exiting the worker process after %s", name)
            os._exit(137)
        return result


class CustodyWorkerInterceptor(Interceptor):
    def __init__(self, exit_after_activity: str | None = None) -> None:
        self._exit_after = exit_after_activity

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next, self._exit_after)
