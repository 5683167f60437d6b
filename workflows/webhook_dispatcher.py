"""WebhookDispatcherWorkflow (id ``webhook-dispatcher-<task queue>``, started by every worker,
joined if it runs): turns the webhook outbox into deliveries and starts one
WebhookDeliveryWorkflow per delivery (activities/webhooks.py says why that is exactly once).

Each round is one long-polling activity (it returns as soon as there is work, or after
`idle_round_seconds`), so an idle dispatcher costs a few history events a minute and a busy one
picks events up within `poll_interval_seconds`. The deliveries are workflows of their own, not
children: they outlive this run when it continues as new (every `rounds_per_run` rounds).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from models.payloads import WebhookClaimResult, WebhookDispatcherInput, WebhookStartResult
    from workflows.common import RETRY_UNTIL_PERMANENT

# A round waits for work at most `idle_round_seconds` (at most 5 minutes); a worker that dies
# during one is noticed by the missing heartbeat and the round runs again elsewhere.
ROUND_TIMEOUT = timedelta(minutes=10)
ROUND_HEARTBEAT = timedelta(seconds=10)


@workflow.defn(name="WebhookDispatcherWorkflow")
class WebhookDispatcherWorkflow:
    def __init__(self) -> None:
        self._dispatched = 0
        self._started = 0

    @workflow.query(name="state")
    def state(self) -> dict[str, int]:
        """Events dispatched and delivery workflows started by this run."""
        return {"events": self._dispatched, "started": self._started}

    @workflow.run
    async def run(self, request: WebhookDispatcherInput) -> None:
        for _ in range(request.rounds_per_run):
            claimed: WebhookClaimResult = await workflow.execute_activity_method(
                WebhookActivities.claim,
                request,
                start_to_close_timeout=ROUND_TIMEOUT,
                heartbeat_timeout=ROUND_HEARTBEAT,
                retry_policy=RETRY_UNTIL_PERMANENT,
            )
            self._dispatched += claimed.events
            if claimed.unstarted:
                started: WebhookStartResult = await workflow.execute_activity_method(
                    WebhookActivities.start,
                    request,
                    start_to_close_timeout=ROUND_TIMEOUT,
                    heartbeat_timeout=ROUND_HEARTBEAT,
                    retry_policy=RETRY_UNTIL_PERMANENT,
                )
                self._started += started.started
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(request)
