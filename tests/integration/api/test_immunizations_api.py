"""Immunizations: requirements, doses and exemptions through the API, doses from HL7 VXU, and
overdue doses announced once each (even by concurrent checks)."""

from __future__ import annotations

import threading
from datetime import date

from flask.testing import FlaskClient
from sqlalchemy import select

from app.models import Appointment, Event, Hl7Message, Immunization
from app.runtime import Runtime
from app.services import immunizations
from jobs.hl7_inbound import transform_message
from tests.integration.api.conftest import Key
from tests.support.hl7_samples import sample

TODAY = date(2026, 12, 1)
ER7 = {"Content-Type": "x-application/hl7-v2+er7"}


def create(client: FlaskClient, key: Key, path: str, **body: object) -> dict[str, object]:
    answer = client.post(f"/v1/{path}", json=body, headers=key.headers)
    assert answer.status_code == 201, answer.json
    return answer.json


def setup(client: FlaskClient, key: Key, mrn: str = "90012") -> tuple[int, int]:
    """A child born 2019-01-01 and an MMR requirement (2 doses, from age 1, 28 days apart)."""
    patient = create(client, key, "patients", mrn=mrn, given_name="Zoë", family_name="Müller",
                     date_of_birth="2019-01-01")
    requirement = create(client, key, "immunization-requirements", vaccine="MMR", codes=["03", "94"], doses=2,
                         first_dose_age_days=365, interval_days=28)
    return int(patient["id"]), int(requirement["id"])  # type: ignore[call-overload]


def overdue(runtime: Runtime, organisation_id: int) -> list[tuple[int, object]]:
    with runtime.sessions.begin() as session:
        immunizations.overdue(session, organisation_id, TODAY)
    with runtime.sessions() as session:
        found = session.scalars(select(Event).where(Event.type == "reminder.immunization_overdue").order_by(Event.id))
        return [(e.payload["dose_number"], e.payload["due_on"]) for e in found]


def test_overdue_doses_are_announced_once_and_not_for_doses_given(client: FlaskClient, alice: Key,
                                                                   clean: Runtime) -> None:
    patient_id, _ = setup(client, alice)
    create(client, alice, "immunizations", patient_id=patient_id, vaccine_code="03", vaccine_name="MMR",
           occurred_on="2020-01-10")
    assert overdue(clean, alice.organisation_id) == [(2, "2020-02-07")]
    assert overdue(clean, alice.organisation_id) == [(2, "2020-02-07")]  # a rerun adds nothing


def test_concurrent_checks_announce_each_overdue_dose_once(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    setup(client, alice)
    barrier = threading.Barrier(3)

    def check() -> None:
        barrier.wait()
        with clean.sessions.begin() as session:
            immunizations.overdue(session, alice.organisation_id, TODAY)

    threads = [threading.Thread(target=check) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert overdue(clean, alice.organisation_id) == [(1, "2020-01-01"), (2, "2020-01-29")]


def test_an_exemption_stops_reminders_until_it_expires(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    patient_id, requirement_id = setup(client, alice)
    exemption = create(client, alice, "immunization-exemptions", patient_id=patient_id,
                       requirement_id=requirement_id, reason="medical", expires_on="2027-01-01")
    assert overdue(clean, alice.organisation_id) == []
    changed = client.patch(f"/v1/immunization-exemptions/{exemption['id']}", json={"expires_on": "2026-11-01"},
                           headers=alice.headers)
    assert changed.status_code == 200
    assert len(overdue(clean, alice.organisation_id)) == 2


def test_a_dose_is_recorded_once_per_patient_vaccine_and_day(client: FlaskClient, alice: Key) -> None:
    patient_id, _ = setup(client, alice)
    dose = {"patient_id": patient_id, "vaccine_code": "03", "vaccine_name": "MMR", "occurred_on": "2020-01-10"}
    create(client, alice, "immunizations", **dose)
    again = client.post("/v1/immunizations", json=dose, headers=alice.headers)
    assert again.status_code == 409 and again.content_type == "application/problem+json"


def test_records_are_scoped_to_the_organisation(client: FlaskClient, alice: Key, bob: Key) -> None:
    patient_id, requirement_id = setup(client, alice)
    dose = client.post("/v1/immunizations", json={"patient_id": patient_id, "vaccine_code": "03",
                                                  "vaccine_name": "MMR", "occurred_on": "2020-01-10"},
                       headers=bob.headers)
    assert dose.status_code == 422 and dose.json["errors"][0]["field"] == "patient_id"
    assert client.get(f"/v1/immunization-requirements/{requirement_id}", headers=bob.headers).status_code == 404
    assert client.get("/v1/immunization-requirements", headers=bob.headers).json["items"] == []


def test_bad_requirements_and_doses_get_a_422_naming_the_field(client: FlaskClient, alice: Key) -> None:
    bad = client.post("/v1/immunization-requirements", json={"vaccine": "MMR", "codes": [], "doses": 0},
                      headers=alice.headers)
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json["errors"]} == {"codes", "doses"}
    wrong = client.post("/v1/immunizations", json={"patient_id": 1, "vaccine_code": "03", "vaccine_name": "MMR",
                                                   "occurred_on": "2020-01-10", "status": "given"},
                        headers=alice.headers)
    assert wrong.status_code == 422 and wrong.json["errors"][0]["field"] == "status"


def test_vxu_doses_become_immunizations_of_the_matching_patient(client: FlaskClient, alice: Key,
                                                                clean: Runtime) -> None:
    patient_id, _ = setup(client, alice, mrn="90012")  # the MRN of the VXU sample's PID-3
    answer = client.post("/v1/hl7/messages", data=sample("vxu_v04_02.hl7"), headers={**alice.headers, **ER7})
    for _ in range(2):  # reprocessing updates the same rows
        transform_message(answer.json["message_id"])
    with clean.sessions() as session:
        found = session.scalars(select(Immunization).order_by(Immunization.occurred_on)).all()
        message = session.get(Hl7Message, answer.json["message_id"])
    assert [(i.patient_id, i.vaccine_code, i.occurred_on, i.source) for i in found] == [
        (patient_id, "88", date(2013, 11, 12), "hl7"), (patient_id, "88", date(2014, 10, 12), "hl7"),
        (patient_id, "49281-0215-88", date(2015, 6, 24), "hl7")]
    assert message is not None and message.status == "processed" and message.error is None


def test_vxu_for_an_unknown_patient_is_a_warning_not_a_failure(client: FlaskClient, alice: Key,
                                                               clean: Runtime) -> None:
    answer = client.post("/v1/hl7/messages", data=sample("vxu_v04_02.hl7"), headers={**alice.headers, **ER7})
    transform_message(answer.json["message_id"])
    with clean.sessions() as session:
        message = session.get(Hl7Message, answer.json["message_id"])
        assert session.scalars(select(Immunization)).all() == []
    assert message is not None and message.status == "processed"
    assert message.error is not None and "not recorded as an immunization" in message.error


def test_an_siu_cancellation_cancels_the_booked_appointment(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    booking = sample("siu_s12_01.hl7").replace(b"\n", b"\r")
    cancel = booking.replace(b"SIU^S12", b"SIU^S15", 1)
    control = booking.split(b"|")[9]
    cancel = cancel.replace(b"|" + control + b"|", b"|" + control + b"-X|", 1)  # its own MSH-10
    for body in (booking, cancel):
        answer = client.post("/v1/hl7/messages", data=body, headers={**alice.headers, **ER7})
        assert answer.status_code == 202, answer.json
        transform_message(answer.json["message_id"])
    with clean.sessions() as session:
        (appointment,) = session.scalars(select(Appointment)).all()
    assert appointment.status == "cancelled" and appointment.source == "hl7"
