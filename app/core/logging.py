"""Logging: readable text locally, one JSON object per line in production."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from app.core.config import Environment, Settings
from app.core.request_context import organization_id_var, request_id_var, user_id_var

_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# One encoder for every record: `json.dumps` with options builds a new one per call.
_encode_json = json.JSONEncoder(default=str, ensure_ascii=False).encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if value is not None and key not in _STANDARD_ATTRS:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return _encode_json(data)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if extra:
            text += " " + " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)
        return text


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "user_id"):
            record.user_id = user_id_var.get()
        if not hasattr(record, "organization_id"):
            record.organization_id = organization_id_var.get()
        return True


def configure_logging(settings: Settings) -> None:
    # Neither format shows the caller, thread or process: don't collect them for every record
    # (the access log writes one per request). These are the switches the logging
    # documentation gives for this ("Optimization"); without the caller lookup, `stack_info`
    # and `stacklevel` have no effect, and nothing here uses them.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    production = settings.ENVIRONMENT is Environment.PRODUCTION
    handler.setFormatter(JsonFormatter() if production else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.LOG_LEVEL.upper())
    # Our own access log replaces uvicorn's, which would log every request a second time.
    logging.getLogger("uvicorn.access").disabled = True
