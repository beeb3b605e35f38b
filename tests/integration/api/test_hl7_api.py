"""HL7 over HTTP, the transform to FHIR (in this process and by a worker), and the FHIR API."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app import fhir
from app.models import Event, FhirResource, Hl7Message
from app.runtime import Runtime
from jobs.errors import PermanentError
from jobs.hl7_inbound import transform_message
from tests.conftest import Processes, wait_for
from tests.integration.api.conftest import Key
from tests.support.hl7_samples import expected_acks, sample

ER7 = {"Content-Type": "x-application/hl7-v2+er7"}
ADT = "MSH|^~\\&|APP|FAC|TRIAGE|HOSP|20260101120000||ADT^{event}|{control}|P|2.5\rPID|1||{mrn}^^^HOSP^MR||{name}^JOHN||19800101|M"


def post(client: FlaskClient, key: Key, body: bytes | str) -> Any:
    data = body.encode() if isinstance(body, str) else body
    return client.post("/v1/hl7/messages", data=data, headers={**key.headers, **ER7})


def test_an_accepted_message_is_answered_aa_with_its_job(client: FlaskClient, alice: Key) -> None:
    answer = post(client, alice, sample("adt_a01_10.hl7"))
    assert answer.status_code == 202, answer.json
    assert answer.json["ack_code"] == "AA" and answer.json["ack"].split("\r")[1] == "MSA|AA|MSG006"
    assert answer.json["job_id"]
    stored = client.get(answer.json["links"]["message"], headers=alice.headers).json
    assert stored["status"] == "accepted" and stored["transport"] == "http" and stored["control_id"] == "MSG006"
    assert stored["raw_text"].startswith("MSH|") and stored["ack"] == answer.json["ack"]


def test_a_rejected_message_is_a_problem_carrying_the_ar(client: FlaskClient, alice: Key) -> None:
    answer = post(client, alice, sample("adt_a01_14_nomsh.hl7"))
    assert answer.status_code == 422 and answer.mimetype == "application/problem+json"
    assert answer.json["ack_code"] == "AR" and "\rERR|" in answer.json["ack"]
    stored = client.get(f"/v1/hl7/messages/{answer.json['message_id']}", headers=alice.headers).json
    assert stored["status"] == "rejected"


def test_media_type_scope_and_tenancy(client: FlaskClient, alice: Key, bob: Key, reader: Key) -> None:
    wrong = client.post("/v1/hl7/messages", data=b"MSH|", headers={**alice.headers, "Content-Type": "application/json"})
    assert wrong.status_code == 415
    assert post(client, reader, sample("adt_a01_10.hl7")).status_code == 403
    message_id = post(client, alice, sample("adt_a01_10.hl7")).json["message_id"]
    assert client.get(f"/v1/hl7/messages/{message_id}", headers=bob.headers).status_code == 404


def _validate(resource: dict[str, Any]) -> None:
    kind = resource["resourceType"]
    module = importlib.import_module(f"fhir.resources.R4B.{kind.lower()}")
    getattr(module, kind).model_validate(resource)


ACCEPTED = sorted(name for name, code in expected_acks().items() if code == "AA")


def test_every_accepted_sample_is_transformed_to_valid_fhir(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    for name in ACCEPTED:
        message_id = post(client, alice, sample(name)).json["message_id"]
        transform_message(message_id)
    with clean.sessions() as session:
        statuses = {m.control_id: m.status for m in session.scalars(select(Hl7Message))}
        resources = [r.resource for r in session.scalars(select(FhirResource))]
    assert set(statuses.values()) == {"processed"}, statuses
    for resource in resources:
        _validate(resource)
    kinds = {r["resourceType"] for r in resources}
    assert {"Patient", "Encounter", "Observation", "DiagnosticReport", "Immunization", "MedicationRequest",
            "Appointment", "ServiceRequest", "DocumentReference"} <= kinds


def test_repeated_adt_updates_one_patient(client: FlaskClient, alice: Key) -> None:
    first = post(client, alice, ADT.format(event="A01", control="1", mrn="777", name="DOE")).json["message_id"]
    second = post(client, alice, ADT.format(event="A08", control="2", mrn="777", name="ROE")).json["message_id"]
    transform_message(first)
    transform_message(second)
    found = client.get("/v1/fhir/Patient", query_string={"identifier": "777"}, headers=alice.headers)
    assert found.status_code == 200 and found.mimetype == "application/fhir+json"
    bundle = found.json
    assert bundle["resourceType"] == "Bundle" and bundle["total"] == 1
    patient = bundle["entry"][0]["resource"]
    assert patient["name"][0]["family"] == "ROE" and patient["meta"]["versionId"] == "2"
    read = client.get(f"/v1/fhir/Patient/{patient['id']}", headers=alice.headers)
    assert read.status_code == 200 and read.json["id"] == patient["id"]


def test_fhir_reads_are_scoped_to_the_organisation(client: FlaskClient, alice: Key, bob: Key) -> None:
    transform_message(post(client, alice, ADT.format(event="A01", control="1", mrn="5", name="DOE")).json["message_id"])
    patient = client.get("/v1/fhir/Patient", query_string={"identifier": "5"}, headers=alice.headers).json
    patient_id = patient["entry"][0]["resource"]["id"]
    assert client.get(f"/v1/fhir/Patient/{patient_id}", headers=bob.headers).status_code == 404
    assert client.get("/v1/fhir/Patient", query_string={"identifier": "5"}, headers=bob.headers).json["total"] == 0
    assert client.get("/v1/fhir/Nonsense/1", headers=alice.headers).status_code == 404


def test_a_message_that_cannot_be_mapped_fails_and_is_reprocessed_after_a_fix(
        client: FlaskClient, alice: Key, clean: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    message_id = post(client, alice, ADT.format(event="A01", control="1", mrn="9", name="DOE")).json["message_id"]

    def broken(er7: str, zone: object = None) -> fhir.MappingResult:
        raise fhir.MappingError("PID-3 has no usable identifier")

    with monkeypatch.context() as patched:
        patched.setattr(fhir, "transform", broken)
        with pytest.raises(PermanentError):
            transform_message(message_id)
    failed = client.get(f"/v1/hl7/messages/{message_id}", headers=alice.headers).json
    assert failed["status"] == "failed" and "PID-3" in failed["error"]
    with clean.sessions() as session:
        assert session.scalars(select(Event.type).where(Event.type == "hl7.message.failed")).all()
    transform_message(message_id)  # the mapping is fixed (unpatched): a requeue reprocesses it
    done = client.get(f"/v1/hl7/messages/{message_id}", headers=alice.headers).json
    assert done["status"] == "processed" and done["resources"]


def test_a_worker_transforms_what_mllp_or_http_accepted(client: FlaskClient, alice: Key, clean: Runtime,
                                                        procs: Processes) -> None:
    message_id = post(client, alice, sample("oru_r01_03.hl7")).json["message_id"]
    procs.worker("hl7.inbound")

    def processed() -> bool:
        with clean.sessions() as session:
            return session.get_one(Hl7Message, message_id).status == "processed"

    wait_for(processed, what="the worker's transform")
    with clean.sessions() as session:
        assert session.scalars(select(Event.type).where(Event.type == "hl7.message.processed")).all()



RAS = ("MSH|^~\\&|PYXIS|WARD3|TRIAGE|HOSP|20261130090000+0000||RAS^O17^RAS_O17|{control}|P|2.5\r"
       "PID|1||{mrn}^^^HOSP^MR||PATIENT^TEST||20120501|F\r"
       "ORC|RE|{placer}^TRIAGE||||||||||\r"
       "RXA|0|1|20261130080000+0000|20261130080000+0000|723^Amoxicillin 500 mg^LOCAL|500|mg^milligram^UCUM||||||||||||CP|A\r"
       "RXR|PO^Oral^HL70162")


def test_a_ras_records_an_administration_once(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    """RAS^O17 goes through the administrations service (safety checks included), idempotently."""
    from app.models import Administration, Patient
    from app.services import hl7_administrations
    from tests.support.clinic import seed_clinic

    with clean.sessions.begin() as session:
        clinic = seed_clinic(session, alice.organisation_id)
        mrn = session.get_one(Patient, clinic.patient_id).mrn
    message = RAS.format(control="R1", mrn=mrn, placer=clinic.prescription_id)
    message_id = post(client, alice, message).json["message_id"]
    transform_message(message_id)
    with clean.sessions() as session:
        [given] = session.scalars(select(Administration)).all()
        assert (given.prescription_id, given.status, float(given.dose_amount)) == (clinic.prescription_id,
                                                                                     "received", 500.0)
        assert given.job_id is not None and given.device_id == "hl7:PYXIS^WARD3"
    with clean.sessions.begin() as session:  # the same message processed again records nothing new
        again = session.get_one(Hl7Message, message_id)
        hl7_administrations.record(session, again, fhir.transform(message.replace("\n", "\r")).resources)
    with clean.sessions() as session:
        assert len(session.scalars(select(Administration)).all()) == 1
    unknown = post(client, alice, RAS.format(control="R2", mrn="NOBODY", placer="1")).json["message_id"]
    transform_message(unknown)
    assert "not recorded as an administration" in client.get(f"/v1/hl7/messages/{unknown}",
                                                             headers=alice.headers).json["error"]


def test_times_without_an_offset_are_read_in_the_organisations_zone(client: FlaskClient, alice: Key,
                                                                     clean: Runtime) -> None:
    from app.models import Administration, Organisation, Patient
    from tests.support.clinic import seed_clinic

    with clean.sessions.begin() as session:
        session.get_one(Organisation, alice.organisation_id).timezone = "Europe/Berlin"
        clinic = seed_clinic(session, alice.organisation_id)
        mrn = session.get_one(Patient, clinic.patient_id).mrn
    local = RAS.format(control="R3", mrn=mrn, placer=clinic.prescription_id).replace("20261130080000+0000",
                                                                                      "20261130080000")
    message_id = post(client, alice, local).json["message_id"]
    transform_message(message_id)
    with clean.sessions() as session:
        [given] = session.scalars(select(Administration)).all()
        message = session.get_one(Hl7Message, message_id)
        stored = session.scalars(select(FhirResource).where(FhirResource.resource_type == "MedicationAdministration")
                                 ).one()
    assert given.given_at == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # 08:00 in Berlin (CET, +01:00)
    assert stored.resource["effectiveDateTime"] == "2026-11-30T08:00:00+01:00"
    assert "UTC assumed" not in (message.error or "")


def test_two_workers_meeting_a_new_patient_at_once_make_one_patient(client: FlaskClient, alice: Key,
                                                                    clean: Runtime) -> None:
    """Matching by identifier is serialised, so concurrent transforms never create the person twice."""
    import threading

    ids = [post(client, alice, ADT.format(event="A01", control=f"C{n}", mrn="4242", name="DOE")).json["message_id"]
           for n in range(4)]
    threads = [threading.Thread(target=transform_message, args=(message_id,)) for message_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    found = client.get("/v1/fhir/Patient", query_string={"identifier": "4242"}, headers=alice.headers).json
    assert found["total"] == 1


def test_an_older_message_does_not_overwrite_a_newer_one(client: FlaskClient, alice: Key) -> None:
    older = post(client, alice, ADT.format(event="A01", control="OLD", mrn="11", name="OLDNAME")).json["message_id"]
    newer = post(client, alice, ADT.format(event="A08", control="NEW", mrn="11", name="NEWNAME")).json["message_id"]
    transform_message(newer)
    transform_message(older)  # processed late (a retry, a slow worker)
    found = client.get("/v1/fhir/Patient", query_string={"identifier": "11"}, headers=alice.headers).json
    assert found["entry"][0]["resource"]["name"][0]["family"] == "NEWNAME"
