"""The API's blueprints, and what they share."""

from __future__ import annotations

from flask import current_app

from app.runtime import Runtime


def app_runtime() -> Runtime:
    """The runtime of the app serving this request (built once per process by `create_app`)."""
    runtime: Runtime = current_app.extensions["triage"]
    return runtime
