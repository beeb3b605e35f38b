"""Health: live (the process answers), ready (dependencies), and the operators' full picture."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.api import app_runtime
from app.api.auth import requires
from app.api.openapi import Operation, documented
from app.migrate import at_head
from app.runtime import Runtime
from app.services import operations

blueprint = Blueprint("health", __name__)


def _database(runtime: Runtime) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        head = at_head(runtime.engine)
    except SQLAlchemyError as exc:
        return {"status": "down", "error": type(exc).__name__}
    latency = round((time.perf_counter() - started) * 1000, 1)
    return {"status": "ok" if head else "down", "latency_ms": latency, "migrations_at_head": head}


def _redis(runtime: Runtime) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        runtime.redis.ping()
    except RedisError as exc:
        return {"status": "down", "error": type(exc).__name__}
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


@blueprint.get("/health/live")
@documented(Operation("Liveness: the process answers (no dependency checked)", errors=(), tags=("health",)))
def live() -> tuple[dict[str, str], int]:
    """The process is up; no dependency is checked."""
    return {"status": "ok"}, 200


@blueprint.get("/health/ready")
@documented(Operation("Readiness: PostgreSQL and Redis reachable, migrations at head (503 otherwise)",
                      errors=(503,), tags=("health",)))
def ready() -> tuple[dict[str, object], int]:
    """503 unless PostgreSQL and Redis answer and the schema is at the newest migration."""
    runtime = app_runtime()
    checks = {"database": _database(runtime)["status"], "redis": _redis(runtime)["status"]}
    ok = all(v == "ok" for v in checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503


def _pipeline(runtime: Runtime) -> dict[str, Any]:
    """Workers per queue, schedulers, and queues whose oldest job waited too long."""
    with runtime.sessions() as session:
        queues = operations.queue_states(session, runtime.redis)
    workers = operations.worker_states(runtime.redis)
    serving = {q.name: sum(1 for w in workers if q.name in w.queues) for q in queues}
    backlogged = [
        q.name for q in queues
        if q.oldest_waiting_seconds is not None and q.oldest_waiting_seconds > operations.backlog_threshold(q.name)
    ]
    unserved = [name for name, count in serving.items() if count == 0]
    schedulers = operations.live_schedulers(runtime.redis)
    return {
        "workers": {"status": "ok" if not unserved else "degraded", "per_queue": serving, "unserved": unserved},
        "scheduler": {"status": "ok" if schedulers else "degraded", "alive": schedulers},
        "backlogs": {"status": "ok" if not backlogged else "degraded", "over_threshold": backlogged,
                     "oldest_waiting_seconds": {q.name: q.oldest_waiting_seconds for q in queues}},
    }


@blueprint.get("/health")
@requires("admin")
@documented(Operation("Every component: database, Redis, workers per queue, scheduler, backlogs",
                      errors=(401, 403, 503), tags=("health",)))
def health() -> tuple[dict[str, Any], int]:
    """ok, degraded (the pipeline lags or lacks workers) or down (a dependency is unreachable)."""
    runtime = app_runtime()
    components: dict[str, Any] = {"database": _database(runtime), "redis": _redis(runtime)}
    if components["database"]["status"] == "ok" and components["redis"]["status"] == "ok":
        components.update(_pipeline(runtime))
    statuses = {c["status"] for c in components.values()}
    overall = "down" if "down" in statuses else "degraded" if "degraded" in statuses else "ok"
    return {"status": overall, "components": components}, 503 if overall == "down" else 200
