"""Data-subject requests: an access export is a valid FHIR R4B Bundle of everything held about the
patient (clinical rows and HL7-derived resources); erasure keeps what must be kept (with reasons) and
removes or pseudonymises the rest; requests are tenant-scoped, due in a month, idempotent."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from dateutil.relativedelta import relativedelta
from fhir.resources.R4B.bundle import Bundle
from flask.testing import FlaskClient
from sqlalchemy import select, update

from app.api.administration_schemas import AdministrationIn
from app.models import (
    Administration,
    Appointment,
    AuditEvent,
    Event,
    FhirResource,
    Hl7Message,
    ImmunizationExemption,
    ImmunizationRequirement,
    Job,
    OutboundMessage,
    Patient,
    Prescription,
    PrivacyRequest,
    Report,
)
from app.runtime import Runtime
from app.services import clinical, events, patient_bundle
from app.services.administrations import correct, decide, receive
from jobs.hl7_inbound import transform_message
from jobs.privacy import fulfil
from jobs.reports import generate
from tests.integration.api.conftest import Key
from tests.support.clinic import GIVEN_AT, Clinic, add_allergy, seed_clinic
from tests.support.hl7_samples import sample

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
MRN = "90012"  # the PID-3 (MR) of the VXU sample
SIU = ("MSH|^~\\&|SCH|FAC|TRIAGE|HOSP|20261201120000||SIU^S12|SIU-1|P|2.5\r"
       "SCH|A1|F1|||||||||^^^20261210090000+0000^20261210093000+0000\r"
       "PID|1||90012^^^NIST-MPI-1^MR||Wong^Elise||19830615|F")


@dataclass(frozen=True)
class Held:
    """What the organisation holds about the patient, by id."""

    clinic: Clinic
    messages: list[int]
    report_id: int
    reminder_id: int


def _administer(runtime: Runtime, clinic: Clinic, given_at: datetime) -> None:
    with runtime.sessions.begin() as session:
        record = AdministrationIn.model_validate(clinic.record(given_at=given_at.isoformat())).model_dump()
        adm = receive(session, record, organisation_id=clinic.organisation_id, api_client_id=None,
                      request_id=None).administration
        decide(session, adm.id, tolerance=0.05, window_minutes=60)


def _hl7(client: FlaskClient, key: Key, message: bytes | str) -> int:
    data = message.encode() if isinstance(message, str) else message
    answer = client.post("/v1/hl7/messages", data=data, headers={**key.headers, **ER7})
    assert answer.status_code == 202, answer.json
    transform_message(answer.json["message_id"])
    return int(answer.json["message_id"])


@pytest.fixture()
def held(client: FlaskClient, clean: Runtime, alice: Key) -> Held:
    """A patient with a recorded and a blocked dose, an allergy, an appointment, HL7 VXU and SIU messages,
    a reminder, a rendered report and reads in the audit log."""
    with clean.sessions.begin() as session:
        clinic = seed_clinic(session, alice.organisation_id)
        session.execute(update(Patient).where(Patient.id == clinic.patient_id).values(mrn=MRN))
    _administer(clean, clinic, GIVEN_AT)
    with clean.sessions.begin() as session:
        correct(session, session.scalars(select(Administration.id)).one(), {"notes": "Taken with water",
                "side_effects": "mild rash"}, organisation_id=clinic.organisation_id, expected_version=1,
                reason="documented late", api_client_id=None)
        add_allergy(session, clinic, "Penicillin", "severe")
        requirement = clinical.create(session, ImmunizationRequirement, {"vaccine": "MMR", "codes": ["03"],
                                                                         "doses": 2}, organisation_id=clinic.organisation_id)
        clinical.create(session, ImmunizationExemption, {"patient_id": clinic.patient_id, "requirement_id": requirement.id,
                                                         "reason": "medical"}, organisation_id=clinic.organisation_id)
        clinical.create(session, Appointment, {"patient_id": clinic.patient_id, "start": GIVEN_AT + timedelta(days=3),
                                               "location": "Nurse's office"}, organisation_id=clinic.organisation_id)
        reminder_id = events.emit(session, organisation_id=clinic.organisation_id, type="reminder.medication_due",
                                  subject=f"{clinic.prescription_id}:x", payload={
                                      "prescription_id": clinic.prescription_id, "patient_id": clinic.patient_id,
                                      "scheduled_at": GIVEN_AT.isoformat()})
    _administer(clean, clinic, GIVEN_AT + timedelta(hours=6))  # blocked: the allergy
    messages = [_hl7(client, alice, sample("vxu_v04_02.hl7")), _hl7(client, alice, SIU)]
    report = client.post("/v1/reports", json={"type": "student_health_summary",
                                              "parameters": {"patient_id": clinic.patient_id}}, headers=alice.headers)
    generate(report.json["id"])
    assert client.get(f"/v1/patients/{clinic.patient_id}", headers=alice.headers).status_code == 200
    assert reminder_id is not None
    return Held(clinic, messages, report.json["id"], reminder_id)


def ask(client: FlaskClient, key: Key, kind: str, patient: int, **headers: str) -> Any:
    return client.post("/v1/privacy/requests", json={"type": kind, "patient": patient},
                       headers={**key.headers, **headers})


def bundle_of(client: FlaskClient, key: Key, request_id: int) -> Any:
    return client.get(f"/v1/privacy/requests/{request_id}/bundle", headers=key.headers)


def validate_each(bundle: dict[str, Any]) -> None:
    for entry in bundle["entry"]:
        kind = entry["resource"]["resourceType"]
        getattr(importlib.import_module(f"fhir.resources.R4B.{kind.lower()}"), kind).model_validate(entry["resource"])


def test_an_access_request_exports_a_valid_fhir_bundle_of_everything_held(client: FlaskClient, alice: Key,
                                                                         clean: Runtime, held: Held) -> None:
    asked = ask(client, alice, "access", held.clinic.patient_id)
    assert asked.status_code == 202, asked.json
    request_id = asked.json["id"]
    assert asked.json["status"] == "queued" and asked.headers["Location"] == asked.json["links"]["self"]
    created = datetime.fromisoformat(asked.json["created_at"])
    assert datetime.fromisoformat(asked.json["due_at"]) == created + relativedelta(months=1)
    early = bundle_of(client, alice, request_id)
    assert early.status_code == 409 and early.mimetype == "application/problem+json"
    assert early.json["status"] == "queued"
    fulfil(request_id)
    done = client.get(f"/v1/privacy/requests/{request_id}", headers=alice.headers).json
    assert done["status"] == "completed" and done["finished_at"]
    answer = bundle_of(client, alice, request_id)
    assert answer.status_code == 200 and answer.mimetype == "application/fhir+json"
    bundle = answer.json
    Bundle.model_validate(bundle)
    validate_each(bundle)
    resources = [e["resource"] for e in bundle["entry"]]
    kinds = [r["resourceType"] for r in resources]
    assert bundle["type"] == "collection" and kinds[0] == "Composition"
    assert {"Patient", "AllergyIntolerance", "MedicationRequest", "MedicationAdministration", "DetectedIssue",
            "Immunization", "Appointment", "Provenance", "Basic"} <= set(kinds)
    statuses = sorted(r["status"] for r in resources if r["resourceType"] == "MedicationAdministration")
    assert statuses == ["completed", "not-done"]
    request = next(r for r in resources if r["resourceType"] == "MedicationRequest")
    assert request["medicationCodeableConcept"]["text"] == "Amoxicillin"
    names = {r["name"][0]["family"] for r in resources if r["resourceType"] == "Patient"}
    assert names == {"Patient", "Wong"}  # the clinical patient and the FHIR Patient from HL7
    assert kinds.count("Immunization") >= 6  # 3 rows from the VXU and its 3 FHIR Immunizations
    assert kinds.count("Appointment") == 3  # the clinical one, the SIU's row and its FHIR Appointment
    assert len({e["fullUrl"] for e in bundle["entry"]}) == len(kinds)
    summary = done["outcome"]["summary"]
    assert summary["counts"]["MedicationAdministration"] == 2 and summary["entries"] == len(kinds) - 1
    with clean.sessions() as session:
        exported = session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.export",
                                                            AuditEvent.actor_type == "system")).one()
        job_id = session.get_one(PrivacyRequest, request_id).job_id
    assert exported.actor_id == f"job:{job_id}" and exported.patient_id == str(held.clinic.patient_id)


def test_erasure_keeps_clinical_and_audit_records_and_removes_the_rest(client: FlaskClient, alice: Key,
                                                                       clean: Runtime, held: Held) -> None:
    patient_id = held.clinic.patient_id
    earlier = ask(client, alice, "portability", patient_id).json["id"]
    fulfil(earlier)
    with clean.sessions() as session:
        audit_before = len(session.scalars(select(AuditEvent.id).where(AuditEvent.patient_id == str(patient_id))).all())
        fhir_patient = patient_bundle.fhir_patients(session, session.get_one(Patient, patient_id))[0].id
    asked = ask(client, alice, "erasure", patient_id)
    assert asked.status_code == 202 and "bundle" not in asked.json["links"]
    fulfil(asked.json["id"])
    done = client.get(f"/v1/privacy/requests/{asked.json['id']}", headers=alice.headers).json
    assert done["status"] == "completed"
    kept = {k["records"]: k for k in done["outcome"]["kept"]}
    removed = {r["records"]: r["count"] for r in done["outcome"]["removed"]}
    assert kept["administrations"]["count"] == 2 and kept["prescriptions"]["count"] == 1
    assert kept["administrations"]["reason"] == "clinical record under legal retention"
    assert kept["safety_events"]["count"] == 1 and kept["immunizations"]["count"] == 3
    assert kept["administration_revisions"]["count"] == 1 and kept["immunization_exemptions"]["count"] == 1
    assert kept["fhir_resources.clinical"]["count"] >= 3
    assert kept["audit_events"]["reason"] == "audit record under legal retention (HIPAA 45 CFR 164.316)"
    assert kept["audit_events"]["count"] >= audit_before > 0
    assert removed == {"hl7_messages.raw": 2, "hl7_messages.raw (unprocessed)": 0, "hl7_outbound.message": 0,
                       "fhir_resources.Patient": 1,
                       "fhir_resources.Appointment/Coverage/RelatedPerson": 1, "appointments": 2,
                       "events.reminder": 1, "reports.pdf": 1, "privacy_requests.bundle": 1}
    with clean.sessions() as session:
        assert len(session.scalars(select(Administration.id)).all()) == 2
        assert len(session.scalars(select(Prescription.id)).all()) == 1
        assert len(session.scalars(select(AuditEvent.id).where(AuditEvent.patient_id == str(patient_id))).all()) \
            > audit_before  # nothing removed, and the erasure itself audited
        raws = [bytes(m.raw) for m in session.scalars(select(Hl7Message).where(Hl7Message.id.in_(held.messages)))]
        assert raws == [f"[erased: privacy request {asked.json['id']} (GDPR Art. 17)]".encode()] * 2
        person = session.get_one(FhirResource, (alice.organisation_id, "Patient", fhir_patient)).resource
        kinds = set(session.scalars(select(FhirResource.resource_type).where(FhirResource.patient_id == fhir_patient)))
        appointments = session.scalars(select(Appointment.id)).all()
        reminder = session.get_one(Event, held.reminder_id).payload
        report = session.get_one(Report, held.report_id)
        announced = session.scalars(select(Event).where(Event.type == "privacy.erasure_completed")).one().payload
        erased = session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.erase")).one()
    assert "name" not in person and "telecom" not in person and "address" not in person
    assert [i["value"] for i in person["identifier"]] == [MRN] and person["meta"]["tag"][0]["code"] == "erased"
    assert "Immunization" in kinds and "Appointment" not in kinds
    assert appointments == []
    assert "patient_id" not in reminder and reminder["erased"] is True
    assert report.pdf is None and report.status == "failed"
    assert client.get(f"/v1/reports/{held.report_id}.pdf", headers=alice.headers).status_code == 409
    assert bundle_of(client, alice, earlier).status_code == 410
    assert bundle_of(client, alice, asked.json["id"]).status_code == 404
    assert set(announced) == {"type", "privacy_request_id", "kept", "removed"}
    assert announced["privacy_request_id"] == asked.json["id"] and announced["removed"]["appointments"] == 2
    assert (erased.actor_type, erased.outcome, erased.patient_id) == ("system", "success", str(patient_id))
    assert erased.actor_id == f"job:{done['job_id']}" and erased.resource_id == str(asked.json["id"])


def test_requests_are_scoped_to_the_organisation(client: FlaskClient, alice: Key, bob: Key, reader: Key,
                                                 held: Held) -> None:
    asked = ask(client, alice, "access", held.clinic.patient_id).json
    assert ask(client, bob, "access", held.clinic.patient_id).status_code == 404
    assert ask(client, alice, "access", 999999).status_code == 404
    assert client.get(f"/v1/privacy/requests/{asked['id']}", headers=bob.headers).status_code == 404
    assert bundle_of(client, bob, asked["id"]).status_code == 404
    assert client.get("/v1/privacy/requests", headers=bob.headers).json["items"] == []
    assert ask(client, reader, "access", held.clinic.patient_id).status_code == 403
    mine = client.get("/v1/privacy/requests", query_string={"status": "queued"}, headers=alice.headers).json
    assert [r["id"] for r in mine["items"]] == [asked["id"]]
    assert client.get("/v1/privacy/requests", query_string={"status": "done"}, headers=alice.headers).status_code \
        == 422
    assert ask(client, alice, "forget", held.clinic.patient_id).status_code == 422


def test_a_retried_post_and_a_rerun_job_do_the_work_once(client: FlaskClient, alice: Key, clean: Runtime,
                                                         held: Held) -> None:
    first = ask(client, alice, "erasure", held.clinic.patient_id, **{"Idempotency-Key": "erase-1"})
    again = ask(client, alice, "erasure", held.clinic.patient_id, **{"Idempotency-Key": "erase-1"})
    assert again.headers.get("Idempotent-Replayed") == "true" and again.json["id"] == first.json["id"]
    fulfil(first.json["id"])
    fulfil(first.json["id"])
    with clean.sessions() as session:
        assert len(session.scalars(select(PrivacyRequest)).all()) == 1
        assert len(session.scalars(select(AuditEvent).where(AuditEvent.action == "patient.erase")).all()) == 1
        assert len(session.scalars(select(Event).where(Event.type == "privacy.erasure_completed")).all()) == 1


def test_the_last_failed_attempt_marks_the_request_failed(client: FlaskClient, alice: Key, clean: Runtime,
                                                          held: Held, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = ask(client, alice, "access", held.clinic.patient_id).json

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(patient_bundle, "build", broken)
    with pytest.raises(RuntimeError):
        fulfil(asked["id"])  # not the last attempt: retried, the request stays running
    assert client.get(asked["links"]["self"], headers=alice.headers).json["status"] == "running"
    with clean.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == asked["job_id"]).values(attempts=3, max_attempts=3))
    with pytest.raises(RuntimeError):
        fulfil(asked["id"])
    failed = client.get(asked["links"]["self"], headers=alice.headers).json
    assert failed["status"] == "failed" and failed["error"] == "fulfilment failed: RuntimeError"
    assert bundle_of(client, alice, asked["id"]).status_code == 409


def test_erasure_redacts_unprocessed_and_outbound_hl7_naming_the_mrn(client: FlaskClient, alice: Key,
                                                                     clean: Runtime) -> None:
    with clean.sessions.begin() as session:
        clinic = seed_clinic(session, alice.organisation_id)
        session.execute(update(Patient).where(Patient.id == clinic.patient_id).values(mrn=MRN))
    adt = ("MSH|^~\\&|APP|FAC|TRIAGE|HOSP|20261201120000||ADT^A01|{control}|X|2.5\r"  # processing id X: AR
           "PID|1||{mrn}^^^NIST-MPI-1^MR||Wong^Elise||19830615|F")
    ids = {}
    for name, mrn in (("ours", MRN), ("other", "55555"), ("prefix", MRN + "9")):
        answer = client.post("/v1/hl7/messages", data=adt.format(control=name, mrn=mrn).encode(),
                             headers={**alice.headers, **ER7})
        assert answer.status_code == 422  # rejected, kept for review
        ids[name] = answer.json["message_id"]
    with clean.sessions.begin() as session:
        outbound = OutboundMessage(organisation_id=alice.organisation_id, destination="lab", message_type="ADT^A08",
                                   control_id="OUT-1", message=adt.format(control="OUT-1", mrn=MRN))
        session.add(outbound)
        session.flush()
        outbound_id = outbound.id
    asked = ask(client, alice, "erasure", clinic.patient_id)
    fulfil(asked.json["id"])
    removed = {r["records"]: r["count"] for r in client.get(f"/v1/privacy/requests/{asked.json['id']}",
                                                            headers=alice.headers).json["outcome"]["removed"]}
    assert removed["hl7_messages.raw (unprocessed)"] == 1 and removed["hl7_outbound.message"] == 1
    marker = f"[erased: privacy request {asked.json['id']} (GDPR Art. 17)]"
    with clean.sessions() as session:
        raws = {name: bytes(session.get_one(Hl7Message, i).raw) for name, i in ids.items()}
        assert session.get_one(OutboundMessage, outbound_id).message == marker
    assert raws["ours"] == marker.encode()
    assert MRN.encode() not in raws["ours"] and b"55555" in raws["other"] and MRN.encode() + b"9" in raws["prefix"]
