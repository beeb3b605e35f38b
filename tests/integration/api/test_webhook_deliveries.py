"""Webhook deliveries run by real worker processes: retries, dead letters and replay, recovery,
and a circuit breaker shared by two workers that postpones without spending attempts."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from standardwebhooks.webhooks import Webhook

from app.models import Event, Job, WebhookDelivery
from app.runtime import Runtime
from app.services import events
from tests.conftest import Processes, outcomes, wait_for
from tests.integration.api.conftest import Key
from tests.support.receiver import Answer, Receiver, running_receiver


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def subscribe(client: FlaskClient, key: Key, url: str, schedule: list[float]) -> dict[str, Any]:
    made = client.post("/v1/webhooks/endpoints", headers=key.headers,
                       json={"url": url, "event_types": ["administration.*"], "retry_schedule": schedule})
    assert made.status_code == 201, made.json
    return dict(made.json)


def emit(runtime: Runtime, org_id: int, subject: str) -> None:
    with runtime.sessions.begin() as session:
        events.emit(session, organisation_id=org_id, type="administration.recorded", subject=subject,
                    payload={"administration_id": int(subject)})


def deliveries(runtime: Runtime) -> list[WebhookDelivery]:
    with runtime.sessions() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def statuses(runtime: Runtime) -> list[str]:
    return [d.status for d in deliveries(runtime)]


def test_a_failing_delivery_is_retried_on_its_schedule_until_delivered(
        client: FlaskClient, alice: Key, clean: Runtime, procs: Processes, receiver: Receiver) -> None:
    endpoint = subscribe(client, alice, receiver.url(), [0.5, 0.5, 0.5])
    receiver.answer(Answer(500), Answer(503))
    emit(clean, alice.organisation_id, "1")
    procs.worker("webhooks")
    wait_for(lambda: statuses(clean) == ["delivered"], what="delivery on the third attempt")
    requests = receiver.received()
    assert len(requests) == 3
    assert len({r.headers["webhook-id"] for r in requests}) == 1
    assert all(b.at - a.at >= 0.4 for a, b in itertools.pairwise(requests))  # 0.5 s - 20 %
    for request in requests:
        Webhook(endpoint["secret"]).verify(request.body, request.headers)
    [sent] = deliveries(clean)
    assert sent.job_id is not None  # the worker records the attempt just after the delivery's commit
    wait_for(lambda: outcomes(clean, sent.job_id) == ["retrying", "retrying", "succeeded"], what="the attempts")
    detail = client.get(f"/v1/webhooks/deliveries/{sent.id}", headers=alice.headers).json
    assert [(a["outcome"], a["status_code"]) for a in detail["history"]] == [
        ("retry", 500), ("retry", 503), ("delivered", 200)]


def test_dead_after_the_last_attempt_then_replayed(
        client: FlaskClient, alice: Key, admin: Key, clean: Runtime, procs: Processes, receiver: Receiver) -> None:
    subscribe(client, alice, receiver.url(), [0.2])
    receiver.default = Answer(500)
    emit(clean, alice.organisation_id, "1")
    procs.worker("webhooks")
    wait_for(lambda: statuses(clean) == ["dead"], what="the delivery to die after 2 attempts")
    dead = client.get("/v1/webhooks/deliveries?status=dead", headers=alice.headers).json["items"]
    assert [d["attempts"] for d in dead] == [2]
    letters = client.get("/v1/admin/dead-letters?queue=webhooks", headers=admin.headers).json
    assert sum(group["count"] for group in letters["groups"]) == 1
    receiver.default = Answer(200)
    replayed = client.post(f"/v1/webhooks/deliveries/{dead[0]['id']}/retry", headers=alice.headers)
    assert replayed.status_code == 202, replayed.json
    wait_for(lambda: statuses(clean) == ["delivered"], what="the replay to be delivered")
    assert len({r.headers["webhook-id"] for r in receiver.received()}) == 1
    again = client.post(f"/v1/webhooks/deliveries/{dead[0]['id']}/retry", headers=alice.headers)
    assert again.status_code == 202  # a delivered one may be resent too (same webhook-id)
    wait_for(lambda: len(receiver.received()) == 4, what="the resend")


def test_recover_resends_dead_deliveries_and_skips_delivered_ones(
        client: FlaskClient, alice: Key, clean: Runtime, procs: Processes, receiver: Receiver) -> None:
    endpoint = subscribe(client, alice, receiver.url(), [])
    receiver.answer(Answer(200), Answer(500), Answer(500))
    start = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    for subject in ("1", "2", "3"):
        emit(clean, alice.organisation_id, subject)
    worker = procs.worker("webhooks")
    wait_for(lambda: sorted(statuses(clean)) == ["dead", "dead", "delivered"], what="one delivered, two dead")
    recovered = client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/recover", headers=alice.headers,
                            query_string={"since": start})
    assert recovered.status_code == 202 and recovered.json["matched"] == 2
    wait_for(lambda: statuses(clean) == ["delivered"] * 3, what="the recovered deliveries")
    assert len(receiver.received()) == 5
    assert worker.poll() is None


def test_ping_goes_to_that_endpoint(client: FlaskClient, alice: Key, clean: Runtime, procs: Processes,
                                    receiver: Receiver) -> None:
    endpoint = subscribe(client, alice, receiver.url(), [1])
    pinged = client.post(f"/v1/webhooks/endpoints/{endpoint['id']}/test", headers=alice.headers)
    assert pinged.status_code == 202
    procs.worker("webhooks")
    wait_for(lambda: receiver.received(), what="the ping")
    body = Webhook(endpoint["secret"]).verify(receiver.received()[0].body, receiver.received()[0].headers)
    assert body["type"] == "webhook.ping" and body["data"]["endpoint_id"] == endpoint["id"]


def _postponed(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM job_attempts WHERE outcome = 'postponed'")).scalar_one())


def test_an_open_breaker_postpones_across_two_workers_without_spending_attempts(
        client: FlaskClient, alice: Key, admin: Key, clean: Runtime, procs: Processes, receiver: Receiver) -> None:
    endpoint = subscribe(client, alice, receiver.url(), [0.2] * 7)
    receiver.default = Answer(503)
    env = {"TRIAGE_BREAKER_FAIL_MAX": "2", "TRIAGE_BREAKER_RESET_SECONDS": "6"}
    for subject in range(1, 7):
        emit(clean, alice.organisation_id, str(subject))
    procs.worker("webhooks", env=env)
    procs.worker("webhooks", env=env)
    name = f"webhook-endpoint-{endpoint['id']}"
    wait_for(lambda: _postponed(clean) >= 3, what="deliveries postponed by the open breaker")
    breakers = client.get("/v1/admin/breakers", headers=admin.headers).json["items"]
    assert [(b["name"], b["state"]) for b in breakers] == [(name, "open")]
    assert len(receiver.received()) <= 4  # fail_max, plus at most one in flight per worker when it opened

    def attempts_spent() -> int:
        with clean.sessions() as session:
            return int(session.scalar(select(func.sum(Job.attempts)).where(Job.kind == "webhooks.deliver")) or 0)

    # Postponing spends no attempt: the ledger counts exactly the requests that reached the receiver.
    wait_for(lambda: attempts_spent() == len(receiver.received()), what="attempts == requests sent")
    assert "dead" not in statuses(clean)
    metrics = client.get("/metrics", headers=admin.headers).get_data(as_text=True)
    assert f'triage_circuit_breaker_state{{name="{name}"}} 1.0' in metrics
    receiver.default = Answer(200)
    wait_for(lambda: statuses(clean) == ["delivered"] * 6, timeout=60, what="delivery once the breaker half-opens")
    assert client.get("/v1/admin/breakers", headers=admin.headers).json["items"][0]["state"] == "closed"


def test_operators_force_a_breaker_closed(client: FlaskClient, alice: Key, admin: Key, clean: Runtime,
                                          procs: Processes, receiver: Receiver) -> None:
    endpoint = subscribe(client, alice, receiver.url(), [0.2] * 7)
    receiver.default = Answer(503)
    emit(clean, alice.organisation_id, "1")
    procs.worker("webhooks", env={"TRIAGE_BREAKER_FAIL_MAX": "1", "TRIAGE_BREAKER_RESET_SECONDS": "3600"})
    name = f"webhook-endpoint-{endpoint['id']}"
    wait_for(lambda: _postponed(clean) >= 1, what="the breaker to open")
    reset = client.post(f"/v1/admin/breakers/{name}/reset", headers=admin.headers)
    assert reset.status_code == 200 and reset.json["state"] == "closed" and reset.json["failures"] == 0
    with clean.sessions() as session:  # the reset is recorded with who did it
        [audit] = session.scalars(select(Event).where(Event.type == "admin.breaker_reset")).all()
        assert audit.payload["breaker"] == name and audit.payload["api_client_id"]
