"""gunicorn entry point for bench/audit.py's "without auditing" case: `gunicorn bench.wsgi_unaudited:app`.

Bench only. The audit write is patched out in this process, before `create_app` registers the
after-request hook, so `app.wsgi` and every deployed process still audit: there is deliberately
no setting that turns auditing off.
"""

from typing import Any

from flask import Response

from app.api import auditing


def _no_record(session: Any, result: Any) -> None:
    """Instead of `auditing.record_success`: write nothing in the request's transaction."""


def _no_after(response: Response) -> Response:
    """Instead of `auditing._after`: write nothing after the request either."""
    return response


auditing.record_success = _no_record
auditing._after = _no_after

from app.wsgi import app  # after the patch: create_app registers auditing._after

__all__ = ["app"]
