"""One webhook attempt at a time, in this process, against a real local receiver.

Signatures are checked with the reference `standardwebhooks` package; outcomes (2xx, 3xx, 410,
429 with Retry-After, 5xx, a run of failures) are checked on the delivery, its attempts, the
endpoint and the error the job raises for the pipeline. The clock is moved by editing timestamps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.api.administration_schemas import AdministrationIn
from app.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.runtime import Runtime
from app.secrets_at_rest import SecretBox
from app.services import breakers, egress, events, webhook_endpoints
from app.services.administrations import decide, receive
from jobs import outbound_http
from jobs.errors import DrainInterrupt, PermanentError, TransientError
from jobs.webhooks import deliver
from tests.support.clinic import add_allergy, seed_clinic
from tests.support.receiver import Answer, Receiver, running_receiver


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def subscribe(runtime: Runtime, org_id: int, url: str, **fields: Any) -> tuple[int, str]:
    """An endpoint for every event type; its id and secret."""
    with runtime.sessions.begin() as session:
        made = webhook_endpoints.create(session, SecretBox(runtime.settings.encryption_keys),
                                        {"url": url, "event_types": ["*"], **fields}, organisation_id=org_id,
                                        allow_loopback=True)
        return made.endpoint.id, made.secret


def emit(runtime: Runtime, org_id: int, subject: str = "1") -> int:
    """An administration.recorded event; the id of the (one) delivery it fanned out to."""
    with runtime.sessions.begin() as session:
        event_id = events.emit(session, organisation_id=org_id, type="administration.recorded", subject=subject,
                               payload={"administration_id": int(subject), "record_id": "r-" + subject})
        return session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.event_id == event_id)).one()


def delivery(runtime: Runtime, delivery_id: int) -> WebhookDelivery:
    with runtime.sessions() as session:
        return session.get_one(WebhookDelivery, delivery_id)


def endpoint(runtime: Runtime, endpoint_id: int) -> WebhookEndpoint:
    with runtime.sessions() as session:
        return session.get_one(WebhookEndpoint, endpoint_id)


def attempt(delivery_id: int) -> Exception | None:
    """Run one attempt; the error it raised for the pipeline, if any."""
    try:
        deliver(delivery_id)
    except (PermanentError, TransientError) as exc:
        return exc
    return None


def test_a_delivery_is_signed_as_standard_webhooks_verifies(clean: Runtime, org_id: int,
                                                           receiver: Receiver) -> None:
    _, secret = subscribe(clean, org_id, receiver.url())
    delivery_id = emit(clean, org_id, "42")
    assert attempt(delivery_id) is None
    [request] = receiver.received()
    payload = Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "administration.recorded"
    assert payload["data"] == {"administration_id": 42, "record_id": "r-42",
                               "links": {"administration": "/v1/administrations/42"}}
    sent = delivery(clean, delivery_id)
    assert request.headers["webhook-id"] == sent.message_id
    assert sent.status == "delivered" and sent.attempts == 1 and sent.last_status_code == 200
    with pytest.raises(WebhookVerificationError):
        Webhook(webhook_endpoints.new_secret()).verify(request.body, request.headers)


def test_a_second_run_of_a_delivered_job_sends_nothing(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    subscribe(clean, org_id, receiver.url())
    delivery_id = emit(clean, org_id)
    attempt(delivery_id)
    attempt(delivery_id)
    assert len(receiver.received()) == 1


def test_during_a_rotation_both_secrets_verify(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    endpoint_id, old = subscribe(clean, org_id, receiver.url())
    with clean.sessions.begin() as session:
        new = webhook_endpoints.rotate_secret(session, SecretBox(clean.settings.encryption_keys), endpoint_id,
                                              organisation_id=org_id, overlap_seconds=3600,
                                              now=datetime.now(UTC)).secret
    attempt(emit(clean, org_id, "1"))
    request = receiver.received()[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(new).verify(request.body, request.headers)
    assert Webhook(old).verify(request.body, request.headers)
    with clean.sessions.begin() as session:  # the overlap ends
        session.execute(update(WebhookEndpoint).values(previous_secret_expires_at=datetime.now(UTC)))
    attempt(emit(clean, org_id, "2"))
    request = receiver.received()[-1]
    assert Webhook(new).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(request.body, request.headers)


def test_410_disables_the_endpoint_at_once(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    endpoint_id, _ = subscribe(clean, org_id, receiver.url())
    receiver.answer(Answer(410, body=b"gone"))
    delivery_id = emit(clean, org_id, "1")
    assert isinstance(attempt(delivery_id), PermanentError)
    gone = endpoint(clean, endpoint_id)
    assert gone.enabled is False and "410" in (gone.disabled_reason or "")
    assert delivery(clean, delivery_id).status == "dead"
    with clean.sessions.begin() as session:
        later = events.emit(session, organisation_id=org_id, type="administration.recorded", subject="2",
                            payload={"administration_id": 2})
        assert session.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == later)).all() == []


def test_retry_after_is_honoured(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    subscribe(clean, org_id, receiver.url(), retry_schedule=[1, 1])
    receiver.answer(Answer(429, {"Retry-After": "120"}, b"slow down"))
    delivery_id = emit(clean, org_id)
    error = attempt(delivery_id)
    assert isinstance(error, TransientError) and error.retry_after == 120
    waiting = delivery(clean, delivery_id)
    assert waiting.status == "retrying" and waiting.last_status_code == 429
    assert waiting.next_attempt_at is not None
    assert timedelta(seconds=115) < waiting.next_attempt_at - datetime.now(UTC) <= timedelta(seconds=121)


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert egress.retry_after({"Retry-After": "Wed, 02 Dec 2026 10:01:30 GMT"}, now=now) == 90
    assert egress.retry_after({"retry-after": "7"}) == 7
    assert egress.retry_after({"Retry-After": "soon"}) is None


def test_failures_follow_the_endpoint_schedule_with_jitter(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    subscribe(clean, org_id, receiver.url(), retry_schedule=[10, 100])
    receiver.default = Answer(500, body=b"x" * 5000)
    delivery_id = emit(clean, org_id)
    first, second = attempt(delivery_id), attempt(delivery_id)
    assert isinstance(first, TransientError) and isinstance(second, TransientError)
    assert first.retry_after is not None and 8 <= first.retry_after <= 12
    assert second.retry_after is not None and 80 <= second.retry_after <= 120
    with clean.sessions() as session:
        tries = session.scalars(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()
        assert [(t.number, t.outcome, t.status_code) for t in tries] == [(1, "retry", 500), (2, "retry", 500)]
        assert all(len(t.response_body or "") == egress.BODY_LIMIT for t in tries)


def test_a_redirect_is_a_failure_and_is_not_followed(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    subscribe(clean, org_id, receiver.url())
    receiver.answer(Answer(302, {"Location": receiver.url("/elsewhere")}))
    assert isinstance(attempt(emit(clean, org_id)), TransientError)
    assert [r.path for r in receiver.received()] == ["/hook"]


def test_a_connection_refused_is_retried(clean: Runtime, org_id: int) -> None:
    subscribe(clean, org_id, "http://127.0.0.1:9/nothing-listens")
    delivery_id = emit(clean, org_id)
    assert isinstance(attempt(delivery_id), TransientError)
    failed = delivery(clean, delivery_id)
    assert failed.status == "retrying" and failed.last_status_code is None and failed.last_error
    assert "nothing-listens" not in failed.last_error  # no URL (it may carry a token) in errors


def test_an_attempt_that_dies_mid_call_is_recorded(clean: Runtime, org_id: int, receiver: Receiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A job timeout (or any error) inside the call leaves the delivery's status true, not pending."""
    subscribe(clean, org_id, receiver.url())
    delivery_id = emit(clean, org_id)

    def timed_out(*_: Any, **__: Any) -> None:
        raise TimeoutError("job timeout")

    monkeypatch.setattr(outbound_http, "call", timed_out)
    with pytest.raises(TimeoutError):
        deliver(delivery_id)
    stuck = delivery(clean, delivery_id)
    assert stuck.status == "retrying" and stuck.attempts == 1 and "TimeoutError" in (stuck.last_error or "")


def test_a_drain_interrupting_a_call_does_not_count_against_the_breaker(clean: Runtime) -> None:
    cb = breakers.breaker(clean.redis, "drain-test", fail_max=1, reset_seconds=60)
    with pytest.raises(DrainInterrupt), cb.calling():
        raise DrainInterrupt()
    assert cb.current_state == "closed"
    with pytest.raises(ConnectionError), cb.calling():
        raise ConnectionError("refused")
    assert cb.current_state == "open"


def test_an_endpoint_failing_for_days_is_disabled(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    endpoint_id, _ = subscribe(clean, org_id, receiver.url())
    with clean.sessions.begin() as session:
        session.execute(update(WebhookEndpoint).values(failing_since=datetime.now(UTC) - timedelta(days=6)))
    receiver.default = Answer(503)
    assert isinstance(attempt(emit(clean, org_id)), PermanentError)
    stopped = endpoint(clean, endpoint_id)
    assert stopped.enabled is False and "failing since" in (stopped.disabled_reason or "")


def test_a_success_ends_the_failure_run(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    endpoint_id, _ = subscribe(clean, org_id, receiver.url())
    receiver.answer(Answer(503))
    delivery_id = emit(clean, org_id)
    attempt(delivery_id)
    assert endpoint(clean, endpoint_id).failing_since is not None
    attempt(delivery_id)
    assert endpoint(clean, endpoint_id).failing_since is None


def record(runtime: Runtime, org_id: int, values: dict[str, Any]) -> None:
    """Receive and decide an administration, as the API and its job do."""
    with runtime.sessions.begin() as session:
        adm = receive(session, AdministrationIn.model_validate(values).model_dump(), organisation_id=org_id,
                      api_client_id=None, request_id=None).administration
        decide(session, adm.id, tolerance=0.05, window_minutes=60)


def test_event_bodies_carry_no_phi(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    """Every event the administrations emit (recorded, blocked, rejected, reorder) is ids and codes only."""
    subscribe(clean, org_id, receiver.url())
    with clean.sessions.begin() as session:
        clinic = seed_clinic(session, org_id, stock=11)
    record(clean, org_id, clinic.record())  # recorded; the lot falls to its reorder level
    with clean.sessions.begin() as session:
        add_allergy(session, clinic, "Penicillin", "severe")
    record(clean, org_id, clinic.record())  # blocked: a safety event
    with clean.sessions() as session:
        ids = session.scalars(select(WebhookDelivery.id)).all()
        types = set(session.scalars(select(Event.type)))
    assert {"administration.recorded", "inventory.reorder_needed", "safety.alert"} <= types
    for delivery_id in ids:
        attempt(delivery_id)
    forbidden = ("Test", "Patient", "MRN-", "2012-05-01", "Nurse Example", "Amoxicillin", "Penicillin", "tablet-7")
    allowed = {"administration_id", "record_id", "safety_event_id", "event_type", "severity", "reason", "lot_id",
               "medication_id", "links"}
    assert len(receiver.received()) == len(ids)
    for request in receiver.received():
        text = request.body.decode()
        assert not [word for word in forbidden if word in text], text
        assert set(json.loads(text)["data"]) <= allowed, text
