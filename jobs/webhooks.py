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
from functools import lru_cache

from limits import RateLimitItemPerMinute
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from pybreaker import CircuitBreaker, CircuitBreakerError
from rq import get_current_job
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import DeliveryStatus, Event, Job, WebhookDelivery, WebhookEndpoint
from app.runtime import Runtime, current
from app.secrets_at_rest import SecretBox
from app.services import breakers, egress, webhook_endpoints
from app.services import webhook_deliveries as deliveries
from jobs.backoff import Schedule
from jobs.errors import PermanentError, Postpone, TransientError
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


@dataclass(frozen=True)
class Sent:
    """What an attempt produced: a response, or the error that prevented one."""

    response: egress.Response | None = None
    error: str | None = None
    refused: bool = False  # the URL now resolves to a forbidden address


@lru_cache(maxsize=4)
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


@lru_cache(maxsize=4)
def _limiter(redis_url: str) -> FixedWindowRateLimiter:
    return FixedWindowRateLimiter(storage_from_string(redis_url))


def endpoint_breaker(runtime: Runtime, endpoint_id: int) -> CircuitBreaker:
    """The endpoint's breaker, shared by every worker through Redis."""
    s = runtime.settings
    return breakers.breaker(runtime.redis, f"webhook-endpoint-{endpoint_id}", fail_max=s.breaker_fail_max,
                            reset_seconds=s.breaker_reset_seconds)


def _attempt_number(session: Session, delivery: WebhookDelivery) -> tuple[int, bool]:
    """This attempt's number and whether it is the last, from the ledger job that runs it."""
    this = get_current_job()
    job_id = int(this.id) if this is not None and this.id.isdigit() else delivery.job_id
    row = session.execute(select(Job.attempts, Job.max_attempts).where(Job.id == job_id)).one_or_none()
    if row is None or row.attempts == 0:  # called directly (tests): count the delivery's own attempts
        return delivery.attempts + 1, False
    return row.attempts, row.attempts >= row.max_attempts


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
    attempt, last = _attempt_number(session, delivery)
    payload = deliveries.body(event)
    secrets = webhook_endpoints.signing_secrets(_box(runtime.settings.require_encryption_keys()), endpoint, now)
    return Plan(delivery.id, endpoint.id, endpoint.url, payload,
                deliveries.signed_headers(delivery.message_id, now, payload, secrets), attempt, last,
                deliveries.schedule_of(endpoint), endpoint.rate_limit_per_minute)


def _hold_back(runtime: Runtime, plan: Plan, cb: CircuitBreaker) -> None:
    """Postpone (no attempt spent) while the breaker is open or the endpoint's rate is used up."""
    wait = breakers.wait_seconds(cb)
    if wait > 0:
        webhook_metrics.POSTPONED.labels("breaker_open").inc()
        raise Postpone(wait, f"circuit breaker of endpoint {plan.endpoint_id} is open")
    if plan.rate_limit:
        limiter = _limiter(runtime.settings.redis_url)
        item = RateLimitItemPerMinute(plan.rate_limit)
        if not limiter.hit(item, "webhook-endpoint", str(plan.endpoint_id)):
            reset_at = limiter.get_window_stats(item, "webhook-endpoint", str(plan.endpoint_id)).reset_time
            webhook_metrics.POSTPONED.labels("rate_limited").inc()
            raise Postpone(max(1.0, reset_at - datetime.now(UTC).timestamp()), "endpoint rate limit reached")


class _Unsuccessful(Exception):
    """A non-2xx answer: a failure for the breaker."""

    def __init__(self, response: egress.Response) -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response


def _send(runtime: Runtime, plan: Plan, cb: CircuitBreaker) -> Sent:
    settings = runtime.settings
    try:
        with cb.calling():
            response = egress.post(plan.url, plan.body, plan.headers, timeout=settings.webhook_timeout,
                                   allow_loopback=settings.egress_allow_loopback)
            if not 200 <= response.status < 300:
                raise _Unsuccessful(response)
    except CircuitBreakerError:
        raise Postpone(max(1.0, breakers.wait_seconds(cb)), "circuit breaker opened meanwhile") from None
    except _Unsuccessful as failed:
        return Sent(failed.response)
    except egress.EgressRefusedError as exc:
        return Sent(error=str(exc)[:500], refused=True)
    except egress.EgressFailedError as exc:
        return Sent(error=str(exc)[:500])
    return Sent(response)


def _outcome(sent: Sent) -> str:
    status = sent.response.status if sent.response else None
    if status is not None and 200 <= status < 300:
        return "delivered"
    if status == 410 or sent.refused:
        return "disabled" if status == 410 else "failed"
    return "retry"


def _delay(plan: Plan, sent: Sent) -> float:
    asked = egress.retry_after(sent.response.headers) if sent.response else None
    if asked is not None:
        return asked
    return Schedule(plan.schedule or (0.0,), jitter=0.2).delay(plan.attempt, _rng)


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
    cb = endpoint_breaker(runtime, plan.endpoint_id)
    _hold_back(runtime, plan, cb)
    sent = _send(runtime, plan, cb)
    webhook_metrics.observe(_outcome(sent), sent.response.latency_ms if sent.response else None)
    error = _settle(runtime, plan, sent, now)
    if error is not None:
        raise error


@job_kind(deliveries.RECOVER_KIND, queue="webhooks", timeout=300, max_attempts=3)
def recover(organisation_id: int, endpoint_id: int, since: str) -> None:
    """Send every dead delivery of an endpoint since a time again (delivered ones are left alone)."""
    with current().sessions.begin() as session:
        ids = deliveries.recoverable(session, endpoint_id, datetime.fromisoformat(since))
        for delivery_id in ids:
            deliveries.replay(session, delivery_id, organisation_id=organisation_id)
    log.info("Webhook endpoint %s: %s dead deliveries sent again", endpoint_id, len(ids))
