"""JSON logs with the request (or job) id on every line; no PHI goes in messages."""

from __future__ import annotations

import logging
import sys

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context() and "request_id" in g:
            record.request_id = g.request_id
        return True


def configure_logging(level: str) -> None:
    """Send every logger's records to stderr as one JSON object a line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter("%(asctime)s %(levelname)s %(name)s %(process)d %(message)s", rename_fields={"asctime": "time"})
    )
    handler.addFilter(_RequestId())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
