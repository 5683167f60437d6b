"""Run a scheduled workflow now, from the API: trigger its schedule (overlap SKIP: nothing new if
a run is going), or, where no worker has created the schedule, start one run with a unique id."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.common import WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode


class RunStarted(BaseModel):
    chain: str
    mode: str  # "schedule_triggered" | "started"
    schedule_id: str | None = None
    workflow_id: str | None = None


async def run_now(temporal: Client, task_queue: str, chain: str, schedule_id: str, workflow: Any, arg: Any, summary: str) -> RunStarted:
    try:
        await temporal.get_schedule_handle(schedule_id).trigger(overlap=ScheduleOverlapPolicy.SKIP)
        return RunStarted(chain=chain, mode="schedule_triggered", schedule_id=schedule_id)
    except RPCError as e:
        if e.status != RPCStatusCode.NOT_FOUND:
            raise
    workflow_id = f"{schedule_id}-manual-{uuid.uuid4().hex[:12]}"
    await temporal.start_workflow(
        workflow,
        arg,
        id=workflow_id,
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=summary,
    )
    return RunStarted(chain=chain, mode="started", workflow_id=workflow_id)
