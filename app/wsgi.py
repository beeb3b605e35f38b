"""WSGI entry point for gunicorn: `gunicorn app.wsgi:app`."""

from app import create_app
from app.config import Settings
from app.logs import configure_logging

_settings = Settings.from_env()
configure_logging(_settings.log_level)
app = create_app(_settings)
