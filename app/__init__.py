"""The Flask app factory: a short list of register steps."""

from __future__ import annotations

import math
import re
import time
import uuid

from flask import Flask, Response, g, request
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address

from app.api.auditing import register_auditing
from app.api.problems import Problem
from app.config import Settings
from app.runtime import Runtime

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> Flask:
    """Build the API app; connections are created per process, never at import."""
    app = Flask(__name__)
    runtime = runtime or Runtime.build(settings or Settings.from_env())
    app.extensions["triage"] = runtime
    app.config["MAX_CONTENT_LENGTH"] = runtime.settings.max_body_bytes
    app.config["SECRET_KEY"] = runtime.settings.require_secret_key()
    register_proxies(app, runtime.settings)
    register_secrets(app, runtime.settings)
    register_request_ids(app)
    register_errors(app)
    register_auth(app)
    register_rate_limits(app, runtime.settings)
    register_blueprints(app)
    register_auditing(app)
    register_metrics(app)
    return app


def register_request_ids(app: Flask) -> None:
    """Accept a well-formed X-Request-ID or make one; echo it; logs and jobs carry it."""

    @app.before_request
    def _assign() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex

    @app.after_request
    def _echo(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response


def register_proxies(app: Flask, settings: Settings) -> None:
    """Trust X-Forwarded-For/-Proto from exactly `proxy_hops` proxies (none by default: never spoofable)."""
    if settings.proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)  # type: ignore[method-assign]


def register_secrets(app: Flask, settings: Settings) -> None:
    """The box that seals webhook signing secrets at rest (fails at boot without its keys)."""
    from app.secrets_at_rest import SecretBox

    app.extensions["triage.secrets"] = SecretBox(settings.require_encryption_keys())


def register_errors(app: Flask) -> None:
    """Every error as application/problem+json."""
    from app.api.problems import register_problems

    register_problems(app)


def register_auth(app: Flask) -> None:
    """Bearer API keys identify the caller; views require scopes."""
    from app.api import auth

    auth.register_auth(app)


def _rate_key() -> str:
    caller = g.get("caller")
    return f"client:{caller.client_id}" if caller else f"ip:{get_remote_address()}"


def register_rate_limits(app: Flask, settings: Settings) -> None:
    """Per API key (per IP without one) limits in Redis; if Redis is down, requests still pass."""
    limiter = Limiter(
        key_func=_rate_key,
        app=app,
        default_limits=[lambda: settings.rate_limit if g.get("caller") else settings.anonymous_rate_limit],
        storage_uri=settings.redis_url,
        strategy="moving-window",
        swallow_errors=True,
        key_prefix="triage-rl",
    )
    limiter.request_filter(lambda: request.path in ("/health/live", "/health/ready"))

    @app.errorhandler(RateLimitExceeded)
    def _limited(exc: RateLimitExceeded) -> Response:
        limit = limiter.current_limit
        wait = max(1, math.ceil(limit.reset_at - time.time())) if limit else 1
        return Problem(429, "Too Many Requests", f"Rate limit exceeded ({exc.description}).",
                       headers={"Retry-After": str(wait)}).to_response()


def register_metrics(app: Flask) -> None:
    """Prometheus metrics at /metrics (scope metrics:read)."""
    from app import metrics

    metrics.register_metrics(app)


def register_blueprints(app: Flask) -> None:
    """The API's routes, and rq-dashboard under admin authentication (after the rate limiter)."""
    from app.api import (
        admin,
        administrations,
        alerts,
        audit_events,
        breakers,
        clinical,
        health,
        hl7,
        jobs,
        openapi,
        privacy,
        report_schedules,
        reports,
        schedules,
        webhooks,
    )
    from app.api.dashboard import register_dashboard

    for module in (health, jobs, clinical, administrations, hl7, reports, report_schedules, webhooks, alerts, admin,
                   breakers, schedules, audit_events, privacy, openapi):
        app.register_blueprint(module.blueprint)
    register_dashboard(app)
