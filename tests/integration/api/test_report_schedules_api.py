"""Scheduled reports: validated (a bad cron is a 422), synced into rq-scheduler at once, run as reports."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.models import Report, WebhookDelivery
from app.runtime import Runtime
from jobs.reports import generate, scheduled
from schedules.process import build_scheduler
from schedules.sync import next_run
from tests.integration.api.conftest import Key
from tests.support.clinic import Clinic, seed_clinic


@pytest.fixture()
def clinic(clean: Runtime, alice: Key) -> Clinic:
    with clean.sessions.begin() as session:
        return seed_clinic(session, alice.organisation_id)


def schedule(client: FlaskClient, key: Key, **fields: Any) -> Any:
    return client.post("/v1/report-schedules", headers=key.headers,
                       json={"cron": "0 6 * * *", "report_type": "custom_table", "parameters": {"query": "inventory"},
                             **fields})


def in_redis(runtime: Runtime) -> list[str]:
    return sorted(job.id for job in build_scheduler(runtime).get_jobs() if job.id.startswith("report-schedule-"))


@pytest.mark.parametrize(("fields", "field"), [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "every morning"}, "cron"),
    ({"cron": "0 6 * * * 2027"}, "cron"),
    ({"cron": "0 0 31 2 *"}, "cron"),  # never fires
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"parameters": {"query": "patients"}}, "query"),
    ({"endpoint_id": 999}, "endpoint_id"),
])
def test_bad_schedules_get_a_422_naming_the_field(client: FlaskClient, alice: Key, fields: dict[str, Any],
                                                  field: str) -> None:
    refused = schedule(client, alice, **fields)
    assert refused.status_code == 422, refused.json
    assert field in refused.json["errors"][0]["field"]


def test_a_schedule_is_synced_at_once_in_its_time_zone_and_removed_with_it(client: FlaskClient, alice: Key,
                                                                            clean: Runtime) -> None:
    made = schedule(client, alice, timezone="Europe/Berlin")
    assert made.status_code == 201, made.json
    assert "T05:00:00" in made.json["next_run_at"]  # 06:00 in Berlin in winter
    assert in_redis(clean) == [f"report-schedule-{made.json['id']}"]
    paused = client.patch(made.headers["Location"], json={"enabled": False}, headers=alice.headers)
    assert paused.status_code == 200 and paused.json["next_run_at"] is None and in_redis(clean) == []
    client.patch(made.headers["Location"], json={"enabled": True}, headers=alice.headers)
    assert client.delete(made.headers["Location"], headers=alice.headers).status_code == 204
    assert in_redis(clean) == []


def test_a_run_makes_a_report_and_tells_the_schedules_endpoint(client: FlaskClient, alice: Key, bob: Key,
                                                               clean: Runtime, clinic: Clinic) -> None:
    endpoint = client.post("/v1/webhooks/endpoints", headers=alice.headers,
                           json={"url": "http://127.0.0.1:9/hook", "event_types": ["administration.*"]}).json
    made = schedule(client, alice, endpoint_id=endpoint["id"]).json
    assert client.get(f"/v1/report-schedules/{made['id']}", headers=bob.headers).status_code == 404
    scheduled(made["id"])
    with clean.sessions() as session:
        [report] = session.scalars(select(Report)).all()
        assert report.schedule_id == made["id"] and report.organisation_id == alice.organisation_id
    generate(report.id)
    with clean.sessions() as session:
        [delivery] = session.scalars(select(WebhookDelivery)).all()
    assert delivery.endpoint_id == endpoint["id"]  # not subscribed to report.ready, but the schedule names it


def test_a_rerun_of_a_scheduled_tick_makes_no_second_report(client: FlaskClient, alice: Key, clean: Runtime,
                                                            clinic: Clinic, monkeypatch: pytest.MonkeyPatch) -> None:
    made = schedule(client, alice).json
    monkeypatch.setattr("jobs.reports.get_current_job", lambda: SimpleNamespace(id="4242"))
    scheduled(made["id"])
    scheduled(made["id"])  # the same run again (a crash after its commit)
    with clean.sessions() as session:
        assert [r.source_job_id for r in session.scalars(select(Report))] == [4242]


def test_schedules_skip_the_past_when_clocks_go_back() -> None:
    """In the repeated hour a wall-clock time may name an instant already past: never book it."""
    now = datetime(2026, 10, 25, 1, 20, tzinfo=UTC)  # 01:20 GMT, the second 01:xx in London
    assert next_run("*/15 * * * *", "Europe/London", now) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert next_run("0 6 * * *", "Europe/Berlin", datetime(2026, 12, 2, 2, 0, tzinfo=UTC)) == \
        datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
