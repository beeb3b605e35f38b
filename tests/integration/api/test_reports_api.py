"""PDF reports over the API: requested, rendered by the job (progress 0 → 100), downloaded, pruned."""

from __future__ import annotations

import io
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from pypdf import PdfReader
from sqlalchemy import insert, select, update

from app.api.administration_schemas import AdministrationIn
from app.models import Administration, Event, ImmunizationRequirement, Job, Patient, Report, SafetyEvent
from app.runtime import Runtime
from app.services import clinical
from app.services.administrations import decide, receive
from jobs.errors import PermanentError
from jobs.reports import generate, prune
from tests.integration.api.conftest import Key
from tests.support.clinic import GIVEN_AT, Clinic, add_allergy, seed_clinic


@pytest.fixture()
def clinic(clean: Runtime, alice: Key) -> Clinic:
    with clean.sessions.begin() as session:
        made = seed_clinic(session, alice.organisation_id)
        session.execute(update(Patient).where(Patient.id == made.patient_id)
                        .values(given_name="José", family_name="Müller-Ñúñez"))
        return made


def ask(client: FlaskClient, key: Key, kind: str, **parameters: Any) -> Any:
    return client.post("/v1/reports", json={"type": kind, "parameters": parameters}, headers=key.headers)


def text_of(pdf: bytes) -> tuple[str, int]:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages), len(reader.pages)


def download(client: FlaskClient, key: Key, report_id: int) -> Any:
    return client.get(f"/v1/reports/{report_id}.pdf", headers=key.headers)


def given(runtime: Runtime, clinic: Clinic, count: int) -> None:
    """`count` recorded administrations of the clinic's patient, written directly (fast)."""
    rows = [{"organisation_id": clinic.organisation_id, "record_id": uuid.uuid4(), "content_hash": "x",
             "patient_id": clinic.patient_id, "prescription_id": clinic.prescription_id, "dose_amount": 500,
             "dose_unit": "mg", "route": "oral", "given_at": GIVEN_AT - timedelta(minutes=n), "status": "recorded",
             "administered_by": "Nurse Ünal", "device_id": "tablet-7"} for n in range(count)]
    with runtime.sessions.begin() as session:
        session.execute(insert(Administration), rows)


def test_a_health_summary_is_requested_rendered_and_downloaded(client: FlaskClient, alice: Key,
                                                              clinic: Clinic) -> None:
    asked = ask(client, alice, "student_health_summary", patient_id=clinic.patient_id)
    assert asked.status_code == 202, asked.json
    report_id = asked.json["id"]
    early = download(client, alice, report_id)
    assert early.status_code == 409 and early.json["status"] == "queued"
    generate(report_id)
    ready = client.get(f"/v1/reports/{report_id}", headers=alice.headers).json
    assert ready["status"] == "ready" and ready["progress"] == 100 and ready["pages"] >= 1
    pdf = download(client, alice, report_id)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert f"student_health_summary-{report_id}.pdf" in pdf.headers["Content-Disposition"]
    text, pages = text_of(pdf.data)
    assert "José Müller-Ñúñez" in text and "Amoxicillin" in text and f"Page 1 of {pages}" in text
    assert "500 mg" in text and "E+" not in text  # doses as people write them


def test_progress_moves_from_0_to_100_on_a_multi_page_log(client: FlaskClient, alice: Key, clean: Runtime,
                                                         clinic: Clinic) -> None:
    given(clean, clinic, 1500)
    day = GIVEN_AT.date()
    report_id = ask(client, alice, "medication_administration_log", patient_id=clinic.patient_id,
                    **{"from": (day - timedelta(days=3)).isoformat(), "to": day.isoformat()}).json["id"]
    seen: list[float] = []
    worker = threading.Thread(target=generate, args=(report_id,))
    worker.start()
    while worker.is_alive():
        with clean.sessions() as session:
            seen.append(session.get_one(Report, report_id).progress)
        worker.join(timeout=0.02)
    with clean.sessions() as session:
        seen.append(session.get_one(Report, report_id).progress)
    assert seen == sorted(seen) and seen[-1] == 100 and any(0 < p < 100 for p in seen)
    text, pages = text_of(download(client, alice, report_id).data)
    assert pages > 10 and f"Page {pages} of {pages}" in text and "Nurse Ünal" in text


def test_incident_custom_and_compliance_reports_render(client: FlaskClient, alice: Key, clean: Runtime,
                                                        clinic: Clinic) -> None:
    with clean.sessions.begin() as session:
        add_allergy(session, clinic, "Penicillin", "severe")
        adm = receive(session, AdministrationIn.model_validate(clinic.record()).model_dump(),
                      organisation_id=clinic.organisation_id, api_client_id=None, request_id=None).administration
        decide(session, adm.id, tolerance=0.05, window_minutes=60)
        event_id = session.scalars(select(SafetyEvent.id)).one()
        clinical.create(session, ImmunizationRequirement, {"vaccine": "MMR", "codes": ["03"], "doses": 2},
                        organisation_id=clinic.organisation_id)
    asks = {
        "incident": ask(client, alice, "incident_report", safety_event_id=event_id),
        "inventory": ask(client, alice, "custom_table", query="inventory", title="Stock on hand"),
        "compliance": ask(client, alice, "immunization_compliance", cohort="Year 7"),
    }
    expected = {"incident": "severe allergy", "inventory": "L-GOOD", "compliance": "Year 7"}
    for name, asked in asks.items():
        assert asked.status_code == 202, asked.json
        generate(asked.json["id"])
        text, _ = text_of(download(client, alice, asked.json["id"]).data)
        assert expected[name] in text, name
    with clean.sessions() as session:
        assert len(session.scalars(select(Event).where(Event.type == "report.ready")).all()) == 3


def test_bad_parameters_get_a_422_naming_the_field(client: FlaskClient, alice: Key) -> None:
    missing = ask(client, alice, "student_health_summary")
    assert missing.status_code == 422 and "patient_id" in missing.json["errors"][0]["field"]
    backwards = ask(client, alice, "medication_administration_log", **{"from": "2026-02-01", "to": "2026-01-01"})
    assert backwards.status_code == 422
    assert ask(client, alice, "custom_table", query="patients; drop table").status_code == 422
    both = ask(client, alice, "medication_administration_log", period="last_week", **{"from": "2026-01-01"})
    assert both.status_code == 422
    assert ask(client, alice, "medication_administration_log", period="fortnight").json["errors"][0]["field"] == "period"


def test_a_relative_period_is_resolved_when_the_report_is_requested(client: FlaskClient, alice: Key) -> None:
    asked = ask(client, alice, "medication_administration_log", period="yesterday")
    assert asked.status_code == 202, asked.json
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert asked.json["parameters"] == {"period": "yesterday", "from": yesterday, "to": yesterday}
    assert client.post("/v1/reports", json={"type": "nonsense"}, headers=alice.headers).status_code == 422


def test_a_report_on_a_missing_patient_fails_with_the_reason(client: FlaskClient, alice: Key) -> None:
    report_id = ask(client, alice, "student_health_summary", patient_id=999999).json["id"]
    with pytest.raises(PermanentError):
        generate(report_id)
    failed = client.get(f"/v1/reports/{report_id}", headers=alice.headers).json
    assert failed["status"] == "failed" and "999999" in failed["error"]


def test_reports_are_scoped_and_listed(client: FlaskClient, alice: Key, bob: Key, reader: Key,
                                       clinic: Clinic) -> None:
    report_id = ask(client, alice, "student_health_summary", patient_id=clinic.patient_id).json["id"]
    assert client.get(f"/v1/reports/{report_id}", headers=bob.headers).status_code == 404
    assert download(client, bob, report_id).status_code == 404
    assert ask(client, reader, "student_health_summary", patient_id=clinic.patient_id).status_code == 403
    listed = client.get("/v1/reports?status=queued", headers=alice.headers).json["items"]
    assert [r["id"] for r in listed] == [report_id]


def test_expired_reports_are_pruned(client: FlaskClient, alice: Key, clean: Runtime, clinic: Clinic) -> None:
    report_id = ask(client, alice, "student_health_summary", patient_id=clinic.patient_id).json["id"]
    generate(report_id)
    prune()
    assert client.get(f"/v1/reports/{report_id}", headers=alice.headers).status_code == 200
    with clean.sessions.begin() as session:
        session.execute(update(Report).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    prune()
    assert client.get(f"/v1/reports/{report_id}", headers=alice.headers).status_code == 404


def test_a_report_whose_job_died_is_failed_not_left_running(client: FlaskClient, alice: Key, clean: Runtime,
                                                            clinic: Clinic) -> None:
    report_id = ask(client, alice, "student_health_summary", patient_id=clinic.patient_id).json["id"]
    with clean.sessions.begin() as session:  # the worker was SIGKILLed on the last attempt
        report = session.get_one(Report, report_id)
        report.status = "running"
        session.execute(update(Job).where(Job.id == report.job_id).values(status="dead"))
    prune()
    failed = client.get(f"/v1/reports/{report_id}", headers=alice.headers).json
    assert failed["status"] == "failed" and "job ended" in failed["error"]
