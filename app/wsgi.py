"""WSGI entry point for gunicorn: `gunicorn app.wsgi:app`."""

import gc

from app import create_app
from app.config import Settings
from app.logs import configure_logging

_settings = Settings.from_env()
configure_logging(_settings.log_level)
app = create_app(_settings)
# The app's long-lived objects (modules, mappers, routes, pydantic models) leave the collector's
# view: a full collection then walks only what requests leave behind, instead of pausing the
# worker for ~0.1 s every few thousand requests to walk the whole heap (docs/benchmarks.md).
gc.freeze()
