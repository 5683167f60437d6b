"""The Temporal baseline: a workflow of one no-op activity, run on the same server as custody.

What Temporal alone costs per workflow on this machine, so custody's rate can be read against it.
Only temporalio is imported here: the workflow runs in the sandbox like custody's own.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="bench_noop")
async def noop(value: int) -> int:
    return value


@workflow.defn(name="BenchNoopWorkflow")
class NoopWorkflow:
    @workflow.run
    async def run(self, value: int) -> int:
        return await workflow.execute_activity(noop, value, start_to_close_timeout=timedelta(seconds=30))
