"""Alerts: conditions raised and resolved, sent to PagerDuty- and Slack-shaped local receivers.

The receivers are real local HTTP servers standing in for PagerDuty's Events API v2 and a Slack
incoming webhook; notifications are sent by running the alert job in this process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select, text

from app.api.administration_schemas import AdministrationIn
from app.models import Alert, AlertNotification, Event
from app.runtime import Runtime
from app.secrets_at_rest import SecretBox
from app.services import alerts, jobs
from app.services.administrations import decide, receive
from jobs.alerts import send
from jobs.errors import PermanentError, Postpone, TransientError
from tests.support.clinic import Clinic, add_allergy, seed_clinic
from tests.support.receiver import Answer, Receiver, running_receiver
from workers.monitor import Monitor

PAGERDUTY_OK = Answer(202, {"Content-Type": "application/json"}, b'{"status":"success","message":"Event processed"}')


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def channel(runtime: Runtime, receiver: Receiver, kind: str, organisation_id: int | None = None,
            **fields: Any) -> int:
    values = {"kind": kind, "name": kind, "url": receiver.url(f"/{kind}"), **fields}
    if kind == "pagerduty":
        values.setdefault("routing_key", "R0UT1NGKEY")
    with runtime.sessions.begin() as session:
        return alerts.create_channel(session, SecretBox(runtime.settings.encryption_keys), values,
                                     organisation_id=organisation_id, allow_loopback=True).id


def notifications(runtime: Runtime) -> list[AlertNotification]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AlertNotification).order_by(AlertNotification.id)))


def send_all(runtime: Runtime) -> list[Exception | None]:
    """Run every pending notification's job once; what each raised."""
    raised: list[Exception | None] = []
    for note in notifications(runtime):
        if note.status == "pending":
            try:
                send(note.id)
                raised.append(None)
            except (PermanentError, TransientError, Postpone) as exc:
                raised.append(exc)
    return raised


def bodies(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received(path)]


@pytest.fixture()
def clinic(clean: Runtime, org_id: int) -> Clinic:
    with clean.sessions.begin() as session:
        return seed_clinic(session, org_id)


def administer(runtime: Runtime, clinic: Clinic, **overrides: Any) -> None:
    with runtime.sessions.begin() as session:
        record = AdministrationIn.model_validate(clinic.record(**overrides)).model_dump()
        adm = receive(session, record, organisation_id=clinic.organisation_id, api_client_id=None,
                      request_id=None).administration
        decide(session, adm.id, tolerance=0.05, window_minutes=60)


def test_a_critical_safety_event_pages_and_reaches_slack_without_phi(
        clean: Runtime, clinic: Clinic, receiver: Receiver) -> None:
    channel(clean, receiver, "pagerduty")
    channel(clean, receiver, "slack")
    receiver.answer(PAGERDUTY_OK)
    with clean.sessions.begin() as session:
        add_allergy(session, clinic, "Penicillin", "severe")
    administer(clean, clinic)
    assert send_all(clean) == [None, None]
    [page] = bodies(receiver, "/pagerduty")
    safety_event_id = page["payload"]["custom_details"]["safety_event_id"]
    assert page["routing_key"] == "R0UT1NGKEY" and page["event_action"] == "trigger"
    assert page["dedup_key"] == f"triage/org-{clinic.organisation_id}/safety_event/{safety_event_id}"
    assert page["payload"]["severity"] == "critical" and page["payload"]["source"] == "triage"
    assert len(page["payload"]["summary"]) <= 1024 and "ALLERGY_BLOCKED" in page["payload"]["summary"]
    [message] = bodies(receiver, "/slack")
    assert "[CRITICAL]" in message["text"] and message["blocks"][0]["type"] == "section"
    for request in receiver.received():
        text_ = request.body.decode()
        assert not [w for w in ("Test", "Patient", "MRN-", "Nurse", "Amoxicillin", "Penicillin") if w in text_]
    assert [n.status for n in notifications(clean)] == ["sent", "sent"]


def test_a_high_safety_event_reaches_slack_only(clean: Runtime, clinic: Clinic, receiver: Receiver) -> None:
    channel(clean, receiver, "pagerduty")
    channel(clean, receiver, "slack")
    administer(clean, clinic, dose_amount=600)  # 20 % over: HIGH
    send_all(clean)
    assert receiver.received("/pagerduty") == []
    assert "[ERROR]" in bodies(receiver, "/slack")[0]["text"]


def test_an_organisations_channel_hears_only_its_own_alerts(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    channel(clean, receiver, "slack", organisation_id=org_id)
    with clean.sessions.begin() as session:
        for org in (org_id, None):
            alerts.trigger(session, alerts.Condition(org, "breaker_open", "x", "error", "Breaker x opened.", {}))
    send_all(clean)
    assert len(receiver.received("/slack")) == 1


def test_a_condition_triggers_once_and_resolves_with_the_same_dedup_key(
        clean: Runtime, org_id: int, receiver: Receiver) -> None:
    channel(clean, receiver, "pagerduty", min_severity="error")
    channel(clean, receiver, "slack")
    receiver.default = PAGERDUTY_OK
    with clean.sessions.begin() as session:
        job = jobs.submit(session, "maintenance.ping", organisation_id=org_id)
        session.execute(text("UPDATE jobs SET status = 'dead', finished_at = now() WHERE id = :id"), {"id": job.id})
    monitor = Monitor(replace(clean, settings=replace(clean.settings, alert_dead_letters=1)))
    monitor.run_once()
    monitor.run_once()  # still over the threshold: no second alert
    with clean.sessions() as session:
        assert [a.condition for a in session.scalars(select(Alert))] == ["dead_letters_high"]
    send_all(clean)
    with clean.sessions.begin() as session:
        jobs.requeue_dead(session, job.id)
    monitor.run_once()  # below the threshold again: resolved
    send_all(clean)
    pages = bodies(receiver, "/pagerduty")
    assert [p["event_action"] for p in pages] == ["trigger", "resolve"]
    assert pages[0]["dedup_key"] == pages[1]["dedup_key"] == "triage/platform/dead_letters_high/all"
    assert set(pages[1]) == {"routing_key", "event_action", "dedup_key"}
    assert bodies(receiver, "/slack")[1]["text"].startswith(":white_check_mark: Resolved")
    with clean.sessions() as session:
        assert session.scalars(select(Alert.status)).one() == "resolved"


def test_a_critical_dead_letter_is_announced_and_alerted(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    channel(clean, receiver, "slack")
    with clean.sessions.begin() as session:
        job = jobs.submit(session, "maintenance.ping", organisation_id=org_id, queue="critical")
        session.execute(text("UPDATE jobs SET status = 'dead', finished_at = now(), last_error_type = 'Boom' "
                             "WHERE id = :id"), {"id": job.id})
    Monitor(clean).run_once()
    Monitor(clean).run_once()
    with clean.sessions() as session:
        [event] = session.scalars(select(Event).where(Event.type == "job.dead_lettered")).all()
        assert event.payload["job_id"] == job.id and event.payload["error_type"] == "Boom"
        alert = session.scalars(select(Alert)).one()
        assert (alert.condition, alert.severity) == ("critical_dead_letter", "critical")
    with clean.sessions.begin() as session:
        jobs.requeue_dead(session, job.id)
    with clean.sessions() as session:
        assert session.scalars(select(Alert.status)).one() == "resolved"


def test_slack_succeeds_only_on_ok(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    channel(clean, receiver, "slack")
    receiver.answer(Answer(200, body=b"not quite"), Answer(404, body=b"no_service"))
    with clean.sessions.begin() as session:
        alerts.trigger(session, alerts.Condition(org_id, "breaker_open", "a", "error", "Breaker a opened.", {}))
    [retry] = send_all(clean)
    assert isinstance(retry, TransientError)
    [dead] = send_all(clean)
    assert isinstance(dead, PermanentError)
    assert [(n.status, n.last_status_code) for n in notifications(clean)] == [("dead", 404)]


def test_a_channel_rate_limit_postpones(clean: Runtime, org_id: int, receiver: Receiver) -> None:
    channel(clean, receiver, "slack", rate_limit_per_minute=1)
    with clean.sessions.begin() as session:
        for subject in ("a", "b"):
            alerts.trigger(session, alerts.Condition(org_id, "breaker_open", subject, "error", "Opened.", {}))
    first, second = send_all(clean)
    assert first is None and isinstance(second, Postpone)
    assert len(receiver.received()) == 1
