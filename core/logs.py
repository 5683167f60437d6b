"""Structured JSON logs carrying the workflow id and withdrawal id; secrets never logged."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from core.redaction import RedactingFilter

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
# Field names that must never reach a log line, whatever a caller passes in `extra`.
_REDACTED = {"private_key", "secret", "kek", "keystore_kek", "api_key", "authorization", "raw_tx", "seed"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if key in ("temporal_workflow", "temporal_activity") and isinstance(value, dict):
                entry.update({k: v for k, v in value.items() if k in _TEMPORAL_FIELDS})
                continue
            entry[key] = "[redacted]" if key.lower() in _REDACTED else value
        workflow_id = entry.get("workflow_id")
        if isinstance(workflow_id, str) and workflow_id.startswith("withdrawal-"):
            entry.setdefault("withdrawal_id", workflow_id.removeprefix("withdrawal-"))
        if isinstance(workflow_id, str) and workflow_id.startswith("wallet-"):
            entry.setdefault("wallet_id", workflow_id.removeprefix("wallet-"))
        # exc_text is the traceback as RedactingFilter left it (RPC URLs and secrets masked).
        if record.exc_text:
            entry["exc"] = record.exc_text
        elif record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_TEMPORAL_FIELDS = {"workflow_id", "run_id", "workflow_type", "activity_type", "activity_id", "attempt", "task_queue"}


def configure_logging(level: str = "INFO", json_output: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_output else logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter())  # the one redaction point for log lines (core/redaction.py)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Temporal's adapters append their context to the message text; we emit it as fields instead.
    from temporalio import activity, workflow

    activity.logger.activity_info_on_message = False
    workflow.logger.workflow_info_on_message = False
    for noisy in ("httpx", "httpcore", "web3", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
