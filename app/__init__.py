"""The Flask app factory: a short list of register steps."""

from __future__ import annotations

from flask import Flask

from app.config import Settings
from app.runtime import Runtime


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API app; connections are created per process, never at import."""
    app = Flask(__name__)
    runtime = Runtime.build(settings or Settings.from_env())
    app.extensions["triage"] = runtime
    register_health(app)
    return app


def register_health(app: Flask) -> None:
    """Liveness and readiness probes (no authentication: they reveal nothing)."""
    from app.api.health import blueprint

    app.register_blueprint(blueprint)
