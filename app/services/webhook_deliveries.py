"""Webhook deliveries: fan-out of an event to its subscribers, signed bodies, attempts, replays.

Every delivery is one ledger job on the `webhooks` queue; its waits between attempts happen in
RQ's scheduled registry. The body is rebuilt from the stored event on each attempt (ids and
links only, never PHI) and is the exact byte string signed. Delivery order is not promised.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from app.models import DeliveryStatus, Event, Job, JobStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.queues import policy_for
from app.services import jobs
from app.services.webhook_endpoints import matches

DELIVER_KIND = "webhooks.deliver"
RECOVER_KIND = "webhooks.recover"
_NAMESPACE = uuid.UUID("6b1f7d0e-4c5a-4f0e-9a43-5d2f1c3b7a10")
#: API paths of the ids an event may carry: receivers fetch the details there, authenticated.
_LINKS = {
    "administration_id": "/v1/administrations/{}",
    "job_id": "/v1/jobs/{}",
    "medication_id": "/v1/medications/{}",
    "lot_id": "/v1/inventory-lots/{}",
    "delivery_id": "/v1/webhooks/deliveries/{}",
    "message_id": "/v1/hl7/messages/{}",
    "report_id": "/v1/reports/{}",
    "prescription_id": "/v1/prescriptions/{}",
    "patient_id": "/v1/patients/{}",
}


class DeliveryNotFoundError(LookupError):
    """No such delivery in this organisation."""


class DeliveryStateError(RuntimeError):
    """The delivery is waiting for an attempt already; a replay would send it twice."""


def default_schedule() -> tuple[float, ...]:
    """Waits before each retry on the webhooks queue's schedule."""
    backoff = policy_for("webhooks").backoff
    return tuple(getattr(backoff, "delays", ()))


def message_id(event_id: int, endpoint_id: int) -> str:
    """The webhook-id of an event's delivery to an endpoint: the same on every attempt and replay."""
    return "msg_" + uuid.uuid5(_NAMESPACE, f"{event_id}:{endpoint_id}").hex


def schedule_of(endpoint: WebhookEndpoint) -> tuple[float, ...]:
    """The endpoint's waits before each retry (its own, or the queue's)."""
    return tuple(endpoint.retry_schedule) if endpoint.retry_schedule is not None else default_schedule()


def _enqueue(session: Session, delivery_id: int, organisation_id: int, endpoint: WebhookEndpoint) -> Job:
    job = jobs.submit(session, DELIVER_KIND, delivery_id, organisation_id=organisation_id,
                      max_attempts=len(schedule_of(endpoint)) + 1)
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(job_id=job.id)
                    .execution_options(synchronize_session=False))
    return job


def create(session: Session, event_id: int, organisation_id: int, endpoint: WebhookEndpoint) -> int | None:
    """A delivery of the event to the endpoint and its job; None if it exists already."""
    delivery_id = session.execute(
        insert(WebhookDelivery)
        .values(organisation_id=organisation_id, endpoint_id=endpoint.id, event_id=event_id,
                message_id=message_id(event_id, endpoint.id))
        .on_conflict_do_nothing(index_elements=["event_id", "endpoint_id"])
        .returning(WebhookDelivery.id)
    ).scalar_one_or_none()
    if delivery_id is not None:
        _enqueue(session, delivery_id, organisation_id, endpoint)
    return delivery_id


#: An organisation's live endpoints: built once (every event of every job reads them).
_ENDPOINTS = select(WebhookEndpoint).where(WebhookEndpoint.organisation_id == bindparam("organisation_id"),
                                           WebhookEndpoint.enabled.is_(True), WebhookEndpoint.deleted_at.is_(None))


def fan_out(session: Session, event_id: int, organisation_id: int, event_type: str) -> int:
    """One delivery per enabled endpoint subscribed to the event's type; how many."""
    return fan_out_many(session, organisation_id, [(event_id, event_type)])


def fan_out_many(session: Session, organisation_id: int, created: list[tuple[int, str]]) -> int:
    """Deliveries for an organisation's new events (id, type), reading its endpoints once; how many.

    The events were stored with `dispatched_at` set: fan-out happens in the same transaction."""
    endpoints = session.scalars(_ENDPOINTS, {"organisation_id": organisation_id}).all()
    made = [create(session, event_id, organisation_id, ep) for event_id, event_type in created
            for ep in endpoints if matches(ep.event_types, event_type)]
    return sum(1 for m in made if m is not None)


def ping(session: Session, endpoint: WebhookEndpoint) -> int:
    """A `webhook.ping` event delivered to this endpoint only; the delivery's id."""
    event_id = session.execute(
        insert(Event)
        .values(organisation_id=endpoint.organisation_id, type="webhook.ping",
                dedupe_key=f"webhook.ping:{endpoint.id}:{uuid.uuid4().hex}",
                payload={"type": "webhook.ping", "endpoint_id": endpoint.id}, dispatched_at=func.now())
        .returning(Event.id)
    ).scalar_one()
    delivery_id = create(session, event_id, endpoint.organisation_id, endpoint)
    assert delivery_id is not None  # a new event has no delivery yet
    return delivery_id


def body(event: Event) -> bytes:
    """The delivered body: `{"type", "timestamp", "data"}`, data = the event's ids/codes plus API links."""
    data: dict[str, Any] = {k: v for k, v in event.payload.items() if k != "type"}
    links = {key.removesuffix("_id"): path.format(data[key]) for key, path in _LINKS.items() if key in data}
    if links:
        data["links"] = links
    document = {"type": event.type, "timestamp": event.created_at.isoformat(), "data": data}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def signed_headers(message: str, sent_at: datetime, payload: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """Standard Webhooks headers for one attempt; one signature per valid secret, space-separated."""
    text = payload.decode()
    signatures = " ".join(Webhook(secret).sign(message, sent_at, text) for secret in secrets)
    return {
        "webhook-id": message,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signatures,
        "content-type": "application/json",
        "user-agent": "Triage-Webhooks/1",
    }


def get(session: Session, delivery_id: int, *, organisation_id: int | None, lock: bool = False) -> WebhookDelivery:
    """One delivery (organisation_id=None: any, for the delivery job)."""
    query = select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
    if organisation_id is not None:
        query = query.where(WebhookDelivery.organisation_id == organisation_id)
    delivery = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if delivery is None:
        raise DeliveryNotFoundError(f"webhook delivery {delivery_id} not found")
    return delivery


def attempts(session: Session, delivery_id: int) -> list[WebhookAttempt]:
    """A delivery's attempts, oldest first."""
    query = select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)
    return list(session.scalars(query))


def page(session: Session, *, organisation_id: int, status: str | None, endpoint_id: int | None,
         before_id: int | None, limit: int) -> list[WebhookDelivery]:
    """The organisation's deliveries, newest first, optionally by status or endpoint."""
    query = (select(WebhookDelivery).where(WebhookDelivery.organisation_id == organisation_id)
             .order_by(WebhookDelivery.id.desc()).limit(limit))
    if status:
        query = query.where(WebhookDelivery.status == status)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    if before_id is not None:
        query = query.where(WebhookDelivery.id < before_id)
    return list(session.scalars(query))


@dataclass(frozen=True)
class AttemptRecord:
    """How one attempt went, for the delivery and its history."""

    number: int
    outcome: str  # delivered | retry | failed | disabled
    status_code: int | None = None
    latency_ms: float | None = None
    response_body: str | None = None
    error: str | None = None


def record(session: Session, delivery: WebhookDelivery, attempt: AttemptRecord, status: DeliveryStatus,
           next_attempt_at: datetime | None = None) -> None:
    """Store an attempt and move the delivery to its new status."""
    session.add(WebhookAttempt(delivery_id=delivery.id, number=attempt.number, outcome=attempt.outcome,
                               status_code=attempt.status_code, latency_ms=attempt.latency_ms,
                               response_body=attempt.response_body, error=attempt.error))
    delivery.status = status.value
    delivery.attempts += 1
    delivery.last_status_code = attempt.status_code
    delivery.last_error = attempt.error
    delivery.next_attempt_at = next_attempt_at
    delivery.updated_at = func.now()
    if status is DeliveryStatus.DELIVERED:
        delivery.delivered_at = func.now()
    session.flush()


def replay(session: Session, delivery_id: int, *, organisation_id: int) -> WebhookDelivery:
    """Send a delivery again (same webhook-id): a dead one gets fresh attempts, a delivered one is resent."""
    delivery = get(session, delivery_id, organisation_id=organisation_id, lock=True)
    job = session.get(Job, delivery.job_id) if delivery.job_id else None
    job_dead = job is not None and job.status == JobStatus.DEAD.value
    if delivery.status in (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value) and not job_dead:
        raise DeliveryStateError(f"delivery {delivery_id} is {delivery.status}: an attempt is already scheduled")
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None:
        raise DeliveryStateError(f"delivery {delivery_id}'s endpoint was deleted")
    if not endpoint.enabled:
        raise DeliveryStateError(f"endpoint {endpoint.id} is disabled: enable it first")
    delivery.status = DeliveryStatus.PENDING.value
    delivery.next_attempt_at = None
    delivery.updated_at = func.now()
    if job is not None and job_dead:
        jobs.requeue_dead(session, job.id)
    else:
        _enqueue(session, delivery.id, delivery.organisation_id, endpoint)
    session.flush()
    return delivery


def recoverable(session: Session, endpoint_id: int, since: datetime) -> list[int]:
    """Ids of the endpoint's dead deliveries created since a time (delivered ones are skipped)."""
    query = (select(WebhookDelivery.id)
             .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.created_at >= since,
                    WebhookDelivery.status == DeliveryStatus.DEAD.value)
             .order_by(WebhookDelivery.id))
    return list(session.scalars(query))
