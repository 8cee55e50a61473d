"""Structured logs carrying the request id. Never log secrets, prompts or completions."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pythonjsonlogger.json

from core.request_context import current_request_id


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id() or "-"
        return True


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per line: ts, level, logger, request_id, msg, then the record's extras
    (and `exc` for a traceback). Web, Celery worker and beat all log through it
    (settings.LOGGING; portal/celery.py hands Celery's logging over to it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", ["levelname", "name", "request_id", "message"])
        kwargs.setdefault(
            "rename_fields",
            {"levelname": "level", "name": "logger", "message": "msg", "exc_info": "exc"},
        )
        kwargs.setdefault("timestamp", "ts")
        super().__init__(*args, **kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["ts"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        if log_data.get("request_id") is None:  # a record the filter did not see
            log_data["request_id"] = "-"
