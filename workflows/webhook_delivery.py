"""WebhookDeliveryWorkflow (id ``webhook-delivery-<delivery id>``): one event to one endpoint.

An attempt posts the event signed with a fresh timestamp; a 2xx answer ends it DELIVERED.
Anything else (an error status, a timeout, no connection, a refused address) is retried after
`first_retry_seconds`, doubling up to `max_retry_interval_seconds` (or the receiver's
Retry-After, within that cap), while the next attempt would still begin before the delivery's
deadline (`retry_period_seconds` after it was made); then it ends FAILED. Every attempt is a row
of the delivery's history (number, status code, latency, error). A redelivery is a new delivery
with its own workflow and deadline.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.webhooks import WebhookActivities
    from models.payloads import WebhookAttemptInput, WebhookAttemptResult, WebhookDeliveryPlan, WebhookDeliveryResult
    from workflows.common import RETRY_UNTIL_PERMANENT, SHORT_STEP


@workflow.defn(name="WebhookDeliveryWorkflow")
class WebhookDeliveryWorkflow:
    @workflow.run
    async def run(self, delivery_id: str) -> WebhookDeliveryResult:
        plan: WebhookDeliveryPlan = await workflow.execute_activity_method(
            WebhookActivities.begin, delivery_id, start_to_close_timeout=SHORT_STEP, retry_policy=RETRY_UNTIL_PERMANENT
        )
        if plan.state != "PENDING":
            return WebhookDeliveryResult(delivery_id, plan.state, plan.attempts)
        # The POST itself is bounded by the request timeout; the rest is a lookup and two writes.
        attempt_timeout = timedelta(seconds=plan.request_timeout_seconds + 30)
        number = plan.attempts
        while True:
            number += 1
            result: WebhookAttemptResult = await workflow.execute_activity_method(
                WebhookActivities.attempt,
                WebhookAttemptInput(delivery_id, number),
                start_to_close_timeout=attempt_timeout,
                retry_policy=RETRY_UNTIL_PERMANENT,
            )
            if result.delivered:
                return WebhookDeliveryResult(delivery_id, "DELIVERED", number)
            if result.final:  # nothing posted this time: the endpoint was deleted, or the period ran out
                return WebhookDeliveryResult(delivery_id, "FAILED", number - 1)
            delay = min(plan.first_retry_seconds * 2 ** min(number - 1, 40), plan.max_retry_interval_seconds)
            if result.retry_after_seconds is not None:
                delay = min(max(delay, result.retry_after_seconds), plan.max_retry_interval_seconds)
            if workflow.now().timestamp() + delay > plan.deadline:
                await workflow.execute_activity_method(
                    WebhookActivities.give_up, delivery_id, start_to_close_timeout=SHORT_STEP, retry_policy=RETRY_UNTIL_PERMANENT
                )
                return WebhookDeliveryResult(delivery_id, "FAILED", number)
            await workflow.sleep(timedelta(seconds=delay))
