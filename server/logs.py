"""Logging, configured in one place for every command (`configure_logging`): text for
people, or one JSON object a line for log pipelines (`STORYROOM_LOG_FORMAT=json`).

A JSON line has `time` (UTC, ISO 8601), `level`, `logger` and `message`, `request_id`
when it was logged while an HTTP request was being handled (the same id the response
carries in `X-Request-Id`; set by `web.request_ids`), and `exception` with the
traceback when there is one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from contextvars import ContextVar
from typing import Final

from storyroom.config import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("storyroom_request_id", default=None)
"""The id of the HTTP request being handled in this context (owner: web.request_ids)."""

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Every logger's records to standard error, at `settings.log_level`, in
    `settings.log_format`; Python's warnings go the same way."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonLines() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)
