"""Health probes: live (the process answers) and ready (PostgreSQL, Redis, migrations at head)."""

from __future__ import annotations

from flask import Blueprint, current_app
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from app.migrate import at_head
from app.runtime import Runtime

blueprint = Blueprint("health", __name__)


@blueprint.get("/health/live")
def live() -> tuple[dict[str, str], int]:
    """The process is up; no dependency is checked."""
    return {"status": "ok"}, 200


@blueprint.get("/health/ready")
def ready() -> tuple[dict[str, object], int]:
    """503 unless PostgreSQL and Redis answer and the schema is at the newest migration."""
    runtime: Runtime = current_app.extensions["triage"]
    checks: dict[str, str] = {}
    try:
        checks["database"] = "ok" if at_head(runtime.engine) else "migrations pending"
    except SQLAlchemyError:
        checks["database"] = "unreachable"
    try:
        runtime.redis.ping()
        checks["redis"] = "ok"
    except RedisError:
        checks["redis"] = "unreachable"
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
