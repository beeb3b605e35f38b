"""Webhook job kinds: deliver one event to one endpoint; recover an endpoint's dead deliveries.

An attempt: check the endpoint's shared circuit breaker (open → postpone, no attempt spent) and
its rate limit (over → postpone), sign, POST to a re-checked public address, then record the
attempt and settle: 2xx delivered; 410 disables the endpoint; anything else retries on the
endpoint's schedule (±20 % jitter) or after the Retry-After the receiver asked for.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.models import DeliveryStatus, Event, WebhookEndpoint
from app.runtime import Runtime, current
from app.secrets_at_rest import box_for
from app.services import alerts, egress, webhook_endpoints
from app.services import webhook_deliveries as deliveries
from jobs import outbound_http
from jobs.attempts import attempt_number
from jobs.backoff import Schedule
from jobs.errors import PermanentError, Postpone, TransientError
from jobs.outbound_http import BreakerOpen, Sent
from jobs.spec import job_kind
from workers import webhook_metrics

log = logging.getLogger(__name__)
_rng = random.SystemRandom()


@dataclass(frozen=True)
class Plan:
    """One attempt, ready to send."""

    delivery_id: int
    endpoint_id: int
    url: str
    body: bytes
    headers: dict[str, str]
    attempt: int
    last: bool
    schedule: tuple[float, ...]
    rate_limit: int | None


def _plan(runtime: Runtime, session: Session, delivery_id: int, now: datetime) -> Plan | str | None:
    """The attempt to make; None when there is nothing to do; a reason when the endpoint is disabled."""
    delivery = deliveries.get(session, delivery_id, organisation_id=None, lock=True)
    if delivery.status not in (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value):
        return None
    endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    if endpoint is None or endpoint.deleted_at is not None:
        delivery.status = DeliveryStatus.CANCELLED.value
        return None
    if not endpoint.enabled:
        delivery.status, delivery.last_error = DeliveryStatus.DEAD.value, "endpoint disabled"
        return f"endpoint {endpoint.id} is disabled: {endpoint.disabled_reason}"
    event = session.get(Event, delivery.event_id)
    assert event is not None  # a foreign key
    attempt, last = attempt_number(session, delivery.job_id, delivery.attempts)
    payload = deliveries.body(event)
    secrets = webhook_endpoints.signing_secrets(box_for(runtime.settings.require_encryption_keys()), endpoint, now)
    return Plan(delivery.id, endpoint.id, endpoint.url, payload,
                deliveries.signed_headers(delivery.message_id, now, payload, secrets), attempt, last,
                deliveries.schedule_of(endpoint), endpoint.rate_limit_per_minute)


def _outcome(sent: Sent) -> str:
    status = sent.status
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status == 410 or sent.refused:
        return "disabled" if status == 410 else "failed"
    return "retry"


def _delay(plan: Plan, sent: Sent) -> float:
    """The scheduled wait, or longer when the receiver's Retry-After asks for it (never shorter:
    a receiver answering `Retry-After: 0` must not burn every attempt in seconds)."""
    scheduled = Schedule(plan.schedule or (0.0,), jitter=0.2).delay(plan.attempt, _rng)
    asked = egress.retry_after(sent.response.headers) if sent.response else None
    return max(scheduled, asked or 0.0)


def _breaker_alert(session: Session, endpoint: WebhookEndpoint, sent: Sent) -> None:
    """Raise an alert when this attempt opened the endpoint's breaker; resolve it when one closes it."""
    name = f"webhook-endpoint-{endpoint.id}"
    if sent.breaker_opened:
        alerts.trigger(session, alerts.Condition(endpoint.organisation_id, "breaker_open", name, "error",
                                                 f"Circuit breaker {name} opened after repeated delivery failures.",
                                                 {"breaker": name, "endpoint_id": endpoint.id}))
    elif sent.breaker_closed:
        alerts.resolve(session, endpoint.organisation_id, "breaker_open", name)


def _settle(runtime: Runtime, plan: Plan, sent: Sent, now: datetime) -> Exception | None:
    """Record the attempt; the error to raise so the pipeline retries or dead-letters (None: done)."""
    outcome = _outcome(sent)
    response = sent.response
    record = deliveries.AttemptRecord(
        plan.attempt, outcome, response.status if response else None, response.latency_ms if response else None,
        response.body.decode("utf-8", "replace") if response else None,
        sent.error or (f"HTTP {response.status}" if response and outcome != "delivered" else None))
    with runtime.sessions.begin() as session:
        delivery = deliveries.get(session, plan.delivery_id, organisation_id=None, lock=True)
        endpoint = session.get(WebhookEndpoint, plan.endpoint_id, with_for_update=True)
        assert endpoint is not None
        _breaker_alert(session, endpoint, sent)
        if outcome == "delivered":
            endpoint.failing_since = None
            deliveries.record(session, delivery, record, DeliveryStatus.DELIVERED)
            return None
        endpoint.failing_since = endpoint.failing_since or now
        too_long = now - endpoint.failing_since >= timedelta(seconds=runtime.settings.webhook_disable_after)
        if outcome == "disabled" or too_long:
            reason = "the endpoint answered 410 Gone" if outcome == "disabled" else \
                f"failing since {endpoint.failing_since.isoformat()} without a success"
            webhook_endpoints.disable(endpoint, reason)
            log.warning("Webhook endpoint %s: disabled (%s)", endpoint.id, reason)
            alerts.trigger(session, alerts.Condition(endpoint.organisation_id, "endpoint_disabled", str(endpoint.id),
                                                     "warning", f"Webhook endpoint {endpoint.id} was disabled: {reason}.",
                                                     {"endpoint_id": endpoint.id}))
            deliveries.record(session, delivery, record, DeliveryStatus.DEAD)
            return PermanentError(f"endpoint {endpoint.id} disabled: {reason}")
        if outcome == "failed" or plan.last:
            deliveries.record(session, delivery, record, DeliveryStatus.DEAD)
            return PermanentError(record.error or "failed")
        delay = _delay(plan, sent)
        deliveries.record(session, delivery, record, DeliveryStatus.RETRYING, now + timedelta(seconds=delay))
        return TransientError(record.error or "failed", retry_after=delay)


@job_kind(deliveries.DELIVER_KIND, queue="webhooks")
def deliver(delivery_id: int) -> None:
    """Make one attempt at a webhook delivery; the pipeline schedules the next one or dead-letters."""
    runtime = current()
    now = datetime.now(UTC)
    with runtime.sessions.begin() as session:
        plan = _plan(runtime, session, delivery_id, now)
    if plan is None:
        return
    if isinstance(plan, str):
        raise PermanentError(plan)
    cb = outbound_http.target_breaker(runtime, f"webhook-endpoint-{plan.endpoint_id}")
    try:
        outbound_http.hold_back(runtime, cb, plan.rate_limit)
    except Postpone as held:
        webhook_metrics.POSTPONED.labels("breaker_open" if isinstance(held, BreakerOpen) else "rate_limited").inc()
        raise
    try:
        sent = outbound_http.call(runtime, cb, plan.url, plan.body, plan.headers,
                                  timeout=runtime.settings.webhook_timeout)
    except Exception as exc:  # a timeout or outage mid-attempt: record it, then let the pipeline decide
        _interrupted(runtime, plan, exc)
        raise
    webhook_metrics.observe(_outcome(sent), sent.response.latency_ms if sent.response else None)
    error = _settle(runtime, plan, sent, now)
    if error is not None:
        raise error


def _interrupted(runtime: Runtime, plan: Plan, exc: Exception) -> None:
    """Keep the delivery's status true when an attempt dies outside the HTTP call's own handling."""
    if isinstance(exc, Postpone):
        return
    status = DeliveryStatus.DEAD if plan.last else DeliveryStatus.RETRYING
    record = deliveries.AttemptRecord(plan.attempt, "failed" if plan.last else "retry",
                                      error=f"attempt interrupted: {type(exc).__name__}")
    with runtime.sessions.begin() as session:
        deliveries.record(session, deliveries.get(session, plan.delivery_id, organisation_id=None, lock=True),
                          record, status)


@job_kind(deliveries.RECOVER_KIND, queue="webhooks", timeout=300, max_attempts=3)
def recover(organisation_id: int, endpoint_id: int, since: str) -> None:
    """Send every dead delivery of an endpoint since a time again (delivered ones are left alone)."""
    sent = 0
    with current().sessions.begin() as session:
        for delivery_id in deliveries.recoverable(session, endpoint_id, datetime.fromisoformat(since)):
            try:
                with session.begin_nested():
                    deliveries.replay(session, delivery_id, organisation_id=organisation_id)
                sent += 1
            except deliveries.DeliveryStateError as exc:  # replayed meanwhile, or the endpoint went away
                log.info("Webhook delivery %s: not recovered (%s)", delivery_id, exc)
    log.info("Webhook endpoint %s: %s dead deliveries sent again", endpoint_id, sent)
