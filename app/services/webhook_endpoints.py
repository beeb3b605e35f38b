"""Webhook endpoints: subscriptions with event-type patterns and server-generated signing secrets.

A secret is `whsec_` + base64 of 32 random bytes, shown once and stored encrypted. Rotating keeps
the previous secret signing for an overlap, so receivers can switch without dropping deliveries.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import WebhookEndpoint
from app.secrets_at_rest import SecretBox
from app.services import alerts, egress

SECRET_PREFIX = "whsec_"
#: An event-type pattern: dotted lowercase names, `*` as a wildcard (`administration.*`, `*`).
PATTERN = re.compile(r"^[a-z0-9_*]+(\.[a-z0-9_*]+)*$")
#: The event types Triage emits, for documentation and for checking that a pattern can match.
EVENT_TYPES = (
    "administration.recorded",
    "administration.rejected",
    "safety.alert",
    "inventory.reorder_needed",
    "job.dead_lettered",
    "hl7.message.processed",
    "hl7.message.failed",
    "report.ready",
    "reminder.medication_due",
    "reminder.medication_missed",
    "reminder.appointment_upcoming",
    "reminder.medication_digest",
    "reminder.immunization_overdue",
    "privacy.erasure_completed",
    "inventory.low_stock",
    "inventory.expiring",
    "webhook.ping",
)


class EndpointNotFoundError(LookupError):
    """No such (undeleted) endpoint in this organisation."""


class InvalidEndpointError(ValueError):
    """An endpoint field that cannot be accepted; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


@dataclass(frozen=True)
class WithSecret:
    """An endpoint and its new signing secret (the only time the secret is shown)."""

    endpoint: WebhookEndpoint
    secret: str


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks format."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def matches(patterns: list[str], event_type: str) -> bool:
    """Whether any subscribed pattern matches the event type (`*` matches within and across dots)."""
    return any(fnmatchcase(event_type, pattern) for pattern in patterns)


def _check(values: dict[str, Any], allow_loopback: bool) -> None:
    if "url" in values:
        try:
            egress.check(values["url"], allow_loopback=allow_loopback)
        except egress.EgressRefusedError as exc:
            raise InvalidEndpointError("url", str(exc)) from None
    for pattern in values.get("event_types") or ():
        if not PATTERN.match(pattern) or not any(fnmatchcase(t, pattern) for t in EVENT_TYPES):
            raise InvalidEndpointError("event_types", f"{pattern!r} matches no event type")


def create(session: Session, box: SecretBox, values: dict[str, Any], *, organisation_id: int,
           allow_loopback: bool) -> WithSecret:
    """Register an endpoint (URL checked against SSRF rules) with a new secret."""
    _check(values, allow_loopback)
    secret = new_secret()
    endpoint = WebhookEndpoint(organisation_id=organisation_id, secret_ciphertext=box.seal(secret), **values)
    session.add(endpoint)
    session.flush()
    return WithSecret(endpoint, secret)


def get(session: Session, endpoint_id: int, *, organisation_id: int, lock: bool = False) -> WebhookEndpoint:
    """One endpoint of the organisation, or EndpointNotFoundError."""
    query = select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id,
                                          WebhookEndpoint.organisation_id == organisation_id,
                                          WebhookEndpoint.deleted_at.is_(None))
    endpoint = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if endpoint is None:
        raise EndpointNotFoundError(f"webhook endpoint {endpoint_id} not found")
    return endpoint


def page(session: Session, *, organisation_id: int, before_id: int | None, limit: int) -> list[WebhookEndpoint]:
    """The organisation's endpoints, newest first."""
    query = (select(WebhookEndpoint)
             .where(WebhookEndpoint.organisation_id == organisation_id, WebhookEndpoint.deleted_at.is_(None))
             .order_by(WebhookEndpoint.id.desc()).limit(limit))
    if before_id is not None:
        query = query.where(WebhookEndpoint.id < before_id)
    return list(session.scalars(query))


def update(session: Session, endpoint_id: int, values: dict[str, Any], *, organisation_id: int,
           allow_loopback: bool) -> WebhookEndpoint:
    """Change fields; enabling again clears the disable reason and the failure run."""
    _check(values, allow_loopback)
    endpoint = get(session, endpoint_id, organisation_id=organisation_id, lock=True)
    if values.get("enabled") is True and not endpoint.enabled:
        endpoint.disabled_reason = None
        endpoint.failing_since = None
        alerts.resolve(session, organisation_id, "endpoint_disabled", str(endpoint.id))
    elif values.get("enabled") is False and endpoint.enabled:
        endpoint.disabled_reason = "disabled by the organisation"
    for name, value in values.items():
        setattr(endpoint, name, value)
    endpoint.updated_at = func.now()
    session.flush()
    return endpoint


def delete(session: Session, endpoint_id: int, *, organisation_id: int) -> None:
    """Remove an endpoint; its history stays and its waiting deliveries are cancelled when due."""
    endpoint = get(session, endpoint_id, organisation_id=organisation_id, lock=True)
    endpoint.deleted_at = endpoint.updated_at = func.now()
    endpoint.enabled = False
    session.flush()


def rotate_secret(session: Session, box: SecretBox, endpoint_id: int, *, organisation_id: int,
                  overlap_seconds: float, now: datetime) -> WithSecret:
    """A new secret; the current one keeps signing (beside it) for `overlap_seconds`.

    Two secrets at most: rotating again during an overlap retires the oldest at once (what an
    emergency rotation after a leak needs)."""
    endpoint = get(session, endpoint_id, organisation_id=organisation_id, lock=True)
    secret = new_secret()
    endpoint.previous_secret_ciphertext = endpoint.secret_ciphertext
    endpoint.previous_secret_expires_at = now + timedelta(seconds=overlap_seconds)
    endpoint.secret_ciphertext = box.seal(secret)
    endpoint.updated_at = func.now()
    session.flush()
    return WithSecret(endpoint, secret)


def signing_secrets(box: SecretBox, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one during an overlap."""
    found = [box.open(endpoint.secret_ciphertext)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_ciphertext and expires is not None and expires > now:
        found.append(box.open(endpoint.previous_secret_ciphertext))
    return found


def disable(endpoint: WebhookEndpoint, reason: str) -> None:
    """Stop deliveries to an endpoint (410 Gone, or failing for too long)."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason[:300]
    endpoint.updated_at = func.now()
