"""Alert channels over the API: secrets never shown, scopes, organisations apart from the operators."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import select, text

from app.models import Alert, Event
from app.runtime import Runtime
from app.services import alerts, jobs
from tests.conftest import Processes, wait_for
from tests.integration.api.conftest import Key

SLACK = {"kind": "slack", "name": "ward", "url": "http://127.0.0.1:9/services/T000/B000/XXXXSECRET"}


def test_a_channel_is_stored_without_showing_its_secrets(client: FlaskClient, alice: Key) -> None:
    made = client.post("/v1/alerts/channels", headers=alice.headers,
                       json={"kind": "pagerduty", "name": "on-call", "url": "http://127.0.0.1:9/v2/enqueue",
                             "routing_key": "SECRETROUTINGKEY"})
    assert made.status_code == 201, made.json
    assert made.json["min_severity"] == "critical" and made.json["url_display"] == "http://127.0.0.1:9/…"
    slack = client.post("/v1/alerts/channels", headers=alice.headers, json=SLACK)
    assert slack.json["min_severity"] == "info"
    listed = client.get("/v1/alerts/channels", headers=alice.headers)
    assert len(listed.json["items"]) == 2
    assert "SECRET" not in listed.get_data(as_text=True) + made.get_data(as_text=True)


def test_pagerduty_needs_a_routing_key_and_urls_are_checked(client: FlaskClient, alice: Key) -> None:
    keyless = client.post("/v1/alerts/channels", headers=alice.headers,
                          json={"kind": "pagerduty", "name": "x", "url": "http://127.0.0.1:9/v2/enqueue"})
    assert keyless.status_code == 422 and keyless.json["errors"][0]["field"] == "routing_key"
    private = client.post("/v1/alerts/channels", headers=alice.headers, json={**SLACK, "url": "https://10.1.2.3/x"})
    assert private.status_code == 422 and private.json["errors"][0]["field"] == "url"


def test_organisations_and_operators_see_their_own_channels(client: FlaskClient, alice: Key, bob: Key,
                                                           admin: Key) -> None:
    mine = client.post("/v1/alerts/channels", headers=alice.headers, json=SLACK).json["id"]
    client.post("/v1/admin/alerts/channels", headers=admin.headers, json=SLACK)
    assert client.get("/v1/alerts/channels", headers=bob.headers).json["items"] == []
    assert [c["id"] for c in client.get("/v1/admin/alerts/channels", headers=admin.headers).json["items"]] != [mine]
    assert client.delete(f"/v1/alerts/channels/{mine}", headers=bob.headers).status_code == 404
    assert client.delete(f"/v1/alerts/channels/{mine}", headers=alice.headers).status_code == 204
    assert client.get("/v1/admin/alerts/channels", headers=alice.headers).status_code == 403


def test_alerts_are_listed_per_organisation_and_for_operators(client: FlaskClient, alice: Key, bob: Key,
                                                             admin: Key, clean: Runtime) -> None:
    with clean.sessions.begin() as session:
        alerts.trigger(session, alerts.Condition(alice.organisation_id, "breaker_open", "a", "error", "Opened.", {}))
        alerts.trigger(session, alerts.Condition(None, "dead_letters_high", "all", "error", "Many.", {}))
    assert [a["condition"] for a in client.get("/v1/alerts", headers=alice.headers).json["items"]] == ["breaker_open"]
    assert client.get("/v1/alerts", headers=bob.headers).json["items"] == []
    everything = client.get("/v1/admin/alerts?status=triggered", headers=admin.headers).json["items"]
    assert {a["condition"] for a in everything} == {"breaker_open", "dead_letters_high"}


def test_the_scheduler_reports_a_dead_critical_job(alice: Key, clean: Runtime, procs: Processes) -> None:
    """The monitor runs in the real scheduler process."""
    with clean.sessions.begin() as session:
        job = jobs.submit(session, "maintenance.ping", organisation_id=alice.organisation_id, queue="critical")
        session.execute(text("UPDATE jobs SET status = 'dead', finished_at = now() WHERE id = :id"), {"id": job.id})
    procs.start("scheduler", env={"TRIAGE_ALERT_INTERVAL": "0.5"})

    def reported() -> bool:
        with clean.sessions() as session:
            event = session.scalars(select(Event.id).where(Event.type == "job.dead_lettered")).first()
            alert = session.scalars(select(Alert.condition)).first()
            return event is not None and alert == "critical_dead_letter"

    wait_for(reported, what="the scheduler's monitor to report the dead job")
