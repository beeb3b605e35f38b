"""Webhook subscriptions and their deliveries (scope `webhooks:manage`).

Endpoints: create (the signing secret is shown once), list, read, change, delete, rotate the
secret, send a test ping, recover dead deliveries. Deliveries: list, read with every attempt,
send again. Delivery order is not promised: receivers order by the event's timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, url_for

from app.api import app_runtime
from app.api import webhook_schemas as s
from app.api.auth import current_caller, requires
from app.api.clinical_schemas import PageQuery
from app.api.idempotency import db, idempotent, transactional
from app.api.openapi import Operation, documented
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import FieldError, Problem
from app.api.validation import body, query
from app.models import Event
from app.secrets_at_rest import SecretBox
from app.services import jobs, webhook_endpoints
from app.services import webhook_deliveries as deliveries

blueprint = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")
_SCOPE = "webhooks:manage"
_TAGS = ("webhooks",)


def _box() -> SecretBox:
    box: SecretBox = current_app.extensions["triage.secrets"]
    return box


def _org() -> int:
    return current_caller().organisation_id


def guarded(run: Callable[[], Any]) -> Any:
    """Service errors as problems: 404 unknown endpoint or delivery, 422 bad field, 409 wrong state."""
    try:
        return run()
    except (webhook_endpoints.EndpointNotFoundError, deliveries.DeliveryNotFoundError):
        raise Problem(404, "Not Found", "No such webhook endpoint or delivery.") from None
    except webhook_endpoints.InvalidEndpointError as exc:
        raise Problem(422, "Unprocessable Content", str(exc), "validation",
                      [FieldError("body", exc.field, str(exc))]) from None
    except deliveries.DeliveryStateError as exc:
        raise Problem(409, "Conflict", str(exc), "delivery-state") from None


def _endpoint(row: Any, model: type[s.EndpointOut] = s.EndpointOut, **extra: Any) -> dict[str, Any]:
    return model.model_validate({**s.EndpointOut.model_validate(row).model_dump(), **extra}).model_dump(mode="json")


@blueprint.post("/endpoints")
@requires(_SCOPE)
@documented(Operation("Subscribe an HTTPS endpoint to event types; the signing secret is shown once",
                      audit="webhook_endpoint.create", audit_resource="WebhookEndpoint",
                      body=s.EndpointIn, response=s.EndpointCreated, status=201, errors=(401, 403, 422), tags=_TAGS))
@transactional
def create_endpoint() -> tuple[Response, int, dict[str, str]]:
    """Register an endpoint; its URL must resolve to public addresses only."""
    values = body(s.EndpointIn).model_dump()
    made = guarded(lambda: webhook_endpoints.create(db(), _box(), values, organisation_id=_org(),
                                                    allow_loopback=app_runtime().settings.egress_allow_loopback))
    location = url_for("webhooks.get_endpoint", endpoint_id=made.endpoint.id)
    return jsonify(_endpoint(made.endpoint, s.EndpointCreated, secret=made.secret)), 201, {"Location": location}


@blueprint.get("/endpoints")
@requires(_SCOPE)
@documented(Operation("List endpoints, newest first", query=PageQuery, response=s.EndpointPage,
                      errors=(401, 403, 422), tags=_TAGS))
@transactional
def list_endpoints() -> Response:
    """A page of the organisation's endpoints."""
    params = query(PageQuery)
    rows = webhook_endpoints.page(db(), organisation_id=_org(), before_id=decode_cursor(params.cursor),
                                  limit=params.limit)
    cursor = encode_cursor(rows[-1].id) if len(rows) == params.limit else None
    return jsonify({"items": [_endpoint(r) for r in rows], "next_cursor": cursor})


@blueprint.get("/endpoints/<int:endpoint_id>")
@requires(_SCOPE)
@documented(Operation("One endpoint", response=s.EndpointOut, errors=(401, 403, 404), tags=_TAGS))
@transactional
def get_endpoint(endpoint_id: int) -> Response:
    """An endpoint (never its secret)."""
    return jsonify(_endpoint(guarded(lambda: webhook_endpoints.get(db(), endpoint_id, organisation_id=_org()))))


@blueprint.patch("/endpoints/<int:endpoint_id>")
@requires(_SCOPE)
@documented(Operation("Change an endpoint (enabled: true re-enables a disabled one)",
                      audit="webhook_endpoint.update", audit_resource="WebhookEndpoint", body=s.EndpointPatch,
                      response=s.EndpointOut, errors=(401, 403, 404, 422), tags=_TAGS))
@transactional
def patch_endpoint(endpoint_id: int) -> Response:
    """Change URL, event types, description, enabled, rate limit or retry schedule."""
    values = body(s.EndpointPatch).model_dump(exclude_unset=True)
    row = guarded(lambda: webhook_endpoints.update(db(), endpoint_id, values, organisation_id=_org(),
                                                   allow_loopback=app_runtime().settings.egress_allow_loopback))
    return jsonify(_endpoint(row))


@blueprint.delete("/endpoints/<int:endpoint_id>")
@requires(_SCOPE)
@documented(Operation("Delete an endpoint; deliveries still waiting are cancelled",
                      audit="webhook_endpoint.delete", audit_resource="WebhookEndpoint", status=204,
                      errors=(401, 403, 404), tags=_TAGS))
@transactional
def delete_endpoint(endpoint_id: int) -> tuple[str, int]:
    """Stop sending to an endpoint; its delivery history stays readable."""
    guarded(lambda: webhook_endpoints.delete(db(), endpoint_id, organisation_id=_org()))
    return "", 204


@blueprint.post("/endpoints/<int:endpoint_id>/rotate-secret")
@requires(_SCOPE)
@documented(Operation("New signing secret; the old one keeps signing beside it for the overlap",
                      audit="webhook_endpoint.rotate_secret", audit_resource="WebhookEndpoint", body=s.RotateIn,
                      response=s.RotatedOut, errors=(401, 403, 404, 422), tags=_TAGS))
@transactional
def rotate_secret(endpoint_id: int) -> Response:
    """During the overlap every delivery carries two signatures (new and old)."""
    params = body(s.RotateIn)
    overlap = app_runtime().settings.webhook_secret_overlap if params.overlap_seconds is None \
        else params.overlap_seconds
    made = guarded(lambda: webhook_endpoints.rotate_secret(db(), _box(), endpoint_id, organisation_id=_org(),
                                                           overlap_seconds=overlap, now=datetime.now(UTC)))
    expires = made.endpoint.previous_secret_expires_at
    return jsonify(s.RotatedOut(id=endpoint_id, secret=made.secret, previous_secret_expires_at=expires)
                   .model_dump(mode="json"))


def _enabled(endpoint_id: int) -> Any:
    """The caller's endpoint, or 409 when it is disabled (deliveries to it would die at once)."""
    endpoint = guarded(lambda: webhook_endpoints.get(db(), endpoint_id, organisation_id=_org()))
    if not endpoint.enabled:
        raise Problem(409, "Conflict", f"Endpoint {endpoint_id} is disabled ({endpoint.disabled_reason}); "
                      "enable it first.", "endpoint-disabled")
    return endpoint


@blueprint.post("/endpoints/<int:endpoint_id>/test")
@requires(_SCOPE)
@idempotent()
@documented(Operation("Send a webhook.ping event to this endpoint", response=s.Accepted, status=202,
                      idempotent=True, errors=(401, 403, 404, 409), tags=_TAGS))
def test_endpoint(endpoint_id: int) -> tuple[Response, int]:
    """A ping delivery, signed and retried like any other."""
    endpoint = _enabled(endpoint_id)
    delivery_id = deliveries.ping(db(), endpoint)
    link = url_for("webhooks.get_delivery", delivery_id=delivery_id)
    return jsonify(s.Accepted(delivery_id=delivery_id, links={"delivery": link}).model_dump()), 202


@blueprint.post("/endpoints/<int:endpoint_id>/recover")
@requires(_SCOPE)
@idempotent()
@documented(Operation("Send again, as a background job, every dead delivery since a time",
                      audit="webhook_endpoint.recover", audit_resource="WebhookEndpoint", query=s.RecoverQuery,
                      response=s.Accepted, status=202, idempotent=True, errors=(401, 403, 404, 409, 422), tags=_TAGS))
def recover_endpoint(endpoint_id: int) -> tuple[Response, int]:
    """Delivered ones are skipped; re-enable a disabled endpoint first."""
    since = query(s.RecoverQuery).since
    _enabled(endpoint_id)
    matched = len(deliveries.recoverable(db(), endpoint_id, since))
    job = jobs.submit(db(), deliveries.RECOVER_KIND, _org(), endpoint_id, since.isoformat(), organisation_id=_org())
    link = url_for("jobs.get_job", job_id=job.id)
    return jsonify(s.Accepted(job_id=job.id, matched=matched, links={"job": link}).model_dump()), 202


@blueprint.get("/deliveries")
@requires(_SCOPE)
@documented(Operation("List deliveries, newest first (status=dead: the dead letters)", query=s.DeliveryQuery,
                      response=s.DeliveryPage, errors=(401, 403, 422), tags=_TAGS))
@transactional
def list_deliveries() -> Response:
    """A page of the organisation's deliveries."""
    params = query(s.DeliveryQuery)
    rows = deliveries.page(db(), organisation_id=_org(), status=params.status, endpoint_id=params.endpoint_id,
                           before_id=decode_cursor(params.cursor), limit=params.limit)
    cursor = encode_cursor(rows[-1].id) if len(rows) == params.limit else None
    items = [s.DeliveryOut.model_validate(r).model_dump(mode="json") for r in rows]
    return jsonify({"items": items, "next_cursor": cursor})


@blueprint.get("/deliveries/<int:delivery_id>")
@requires(_SCOPE)
@documented(Operation("One delivery with every attempt", response=s.DeliveryDetail, errors=(401, 403, 404),
                      tags=_TAGS))
@transactional
def get_delivery(delivery_id: int) -> Response:
    """Status, attempts (status code, latency, truncated response, error) and the event type."""
    row = guarded(lambda: deliveries.get(db(), delivery_id, organisation_id=_org()))
    event = db().get(Event, row.event_id)
    history = [s.AttemptOut.model_validate(a) for a in deliveries.attempts(db(), row.id)]
    out = s.DeliveryDetail(**s.DeliveryOut.model_validate(row).model_dump(), event_type=event.type if event else "",
                           history=history)
    return jsonify(out.model_dump(mode="json"))


@blueprint.post("/deliveries/<int:delivery_id>/retry")
@requires(_SCOPE)
@idempotent()
@documented(Operation("Send a dead or delivered delivery again (same webhook-id)",
                      audit="webhook_delivery.retry", audit_resource="WebhookDelivery", response=s.Accepted,
                      status=202, idempotent=True, errors=(401, 403, 404, 409), tags=_TAGS))
def retry_delivery(delivery_id: int) -> tuple[Response, int]:
    """409 while an attempt is already scheduled."""
    row = guarded(lambda: deliveries.replay(db(), delivery_id, organisation_id=_org()))
    link = url_for("webhooks.get_delivery", delivery_id=row.id)
    return jsonify(s.Accepted(delivery_id=row.id, job_id=row.job_id, links={"delivery": link}).model_dump()), 202
