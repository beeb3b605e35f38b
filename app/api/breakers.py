"""Operators' view of the circuit breakers (scope `admin`): list them, force one closed."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify

from app.api import app_runtime
from app.api.auth import current_caller, requires
from app.api.openapi import Operation, documented
from app.api.problems import Problem
from app.api.webhook_schemas import BreakerList, BreakerOut
from app.services import breakers, events

log = logging.getLogger(__name__)
blueprint = Blueprint("breakers", __name__, url_prefix="/v1/admin")


@blueprint.get("/breakers")
@requires("admin")
@documented(Operation("Every circuit breaker with its state (closed, open, half-open) and failure count",
                      response=BreakerList, tags=("admin",)))
def list_breakers() -> Response:
    """Read from Redis, where every worker process keeps them."""
    runtime = app_runtime()
    found = breakers.views(runtime.redis, fail_max=runtime.settings.breaker_fail_max,
                           reset_seconds=runtime.settings.breaker_reset_seconds)
    return jsonify(BreakerList(items=[BreakerOut(**asdict(v)) for v in found]).model_dump(mode="json"))


@blueprint.post("/breakers/<name>/reset")
@requires("admin")
@documented(Operation("Force a circuit breaker closed (audited)", audit="breaker.reset", audit_resource="Breaker",
                      response=BreakerOut, errors=(401, 403, 404),
                      tags=("admin",)))
def reset_breaker(name: str) -> Response:
    """Waiting deliveries go out at their next scheduled attempt."""
    runtime = app_runtime()
    try:
        view = breakers.reset(runtime.redis, name, fail_max=runtime.settings.breaker_fail_max,
                              reset_seconds=runtime.settings.breaker_reset_seconds)
    except breakers.UnknownBreakerError:
        raise Problem(404, "Not Found", f"No circuit breaker named {name!r}.") from None
    caller = current_caller()
    with runtime.sessions.begin() as session:  # a durable record of who forced it, when
        events.emit(session, organisation_id=caller.organisation_id, type="admin.breaker_reset",
                    subject=f"{name}:{datetime.now(UTC).isoformat()}",
                    payload={"breaker": name, "api_client_id": caller.client_id}, deliver=False)
    log.warning("Breaker %s: forced closed by API client %s (audit)", name, caller.client_id)
    return jsonify(BreakerOut(**asdict(view)).model_dump(mode="json"))
