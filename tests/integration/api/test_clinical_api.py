"""Setting up a deployment without SQL: patients, allergies, medications, prescriptions, inventory."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from app.runtime import Runtime
from tests.integration.api.conftest import Key, make_key
from tests.integration.api.test_jobs_api import assert_problem


def create(client: FlaskClient, key: Key, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/{path}", headers=key.headers, json=body)
    assert response.status_code == 201, response.get_json()
    assert response.headers["Location"].endswith(f"/{response.get_json()['id']}")
    return response.get_json()  # type: ignore[no-any-return]


def setup(client: FlaskClient, key: Key) -> dict[str, dict[str, Any]]:
    patient = create(client, key, "patients", {"student_number": "S-1", "given_name": "Ada", "family_name": "L",
                                                "date_of_birth": "2014-02-03"})
    medication = create(client, key, "medications", {"name": "Ibuprofen", "code": "5640", "form": "tablet",
                                                      "strength": 200, "unit": "mg", "ingredients": ["ibuprofen"]})
    return {
        "patient": patient,
        "medication": medication,
        "allergy": create(client, key, "allergies", {"patient_id": patient["id"], "substance_name": "Peanut",
                                                     "severity": "severe", "reaction": "anaphylaxis"}),
        "prescription": create(client, key, "prescriptions", {
            "patient_id": patient["id"], "medication_id": medication["id"], "dose_amount": 200, "dose_unit": "mg",
            "route": "oral", "interval_hours": 6, "start_date": "2026-11-01", "prescriber": "Dr P"}),
        "lot": create(client, key, "inventory-lots", {"medication_id": medication["id"], "lot_number": "A1",
                                                      "quantity": 50, "expires_on": "2027-01-31"}),
    }


def test_a_clinic_is_set_up_read_and_changed_over_the_api(client: FlaskClient, alice: Key) -> None:
    rows = setup(client, alice)
    assert rows["medication"]["strength"] == 200 and rows["lot"]["reorder_level"] == 0
    patient_id = rows["patient"]["id"]
    listed = client.get("/v1/allergies", query_string={"patient_id": patient_id}, headers=alice.headers)
    assert [a["substance_name"] for a in listed.get_json()["items"]] == ["Peanut"]
    changed = client.patch(f"/v1/inventory-lots/{rows['lot']['id']}", headers=alice.headers, json={"quantity": 40})
    assert changed.status_code == 200 and changed.get_json()["quantity"] == 40
    stopped = client.patch(f"/v1/prescriptions/{rows['prescription']['id']}", headers=alice.headers,
                           json={"active": False, "end_date": "2026-11-30"})
    assert stopped.get_json()["active"] is False
    active = client.get("/v1/prescriptions", query_string={"active": "true"}, headers=alice.headers)
    assert active.get_json()["items"] == []
    fetched = client.get(f"/v1/patients/{patient_id}", headers=alice.headers).get_json()
    assert fetched["student_number"] == "S-1" and fetched["mrn"] is None


def test_lists_page_with_a_cursor(client: FlaskClient, alice: Key) -> None:
    for n in range(3):
        create(client, alice, "medications", {"name": f"M{n}", "form": "tablet", "unit": "mg"})
    first = client.get("/v1/medications", query_string={"limit": 2}, headers=alice.headers).get_json()
    rest = client.get("/v1/medications", query_string={"limit": 2, "cursor": first["next_cursor"]},
                      headers=alice.headers).get_json()
    assert [m["name"] for m in first["items"] + rest["items"]] == ["M2", "M1", "M0"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(("path", "body", "field"), [
    ("patients", {"given_name": "A", "family_name": "B", "date_of_birth": "2014-01-01"}, "(root)"),
    ("patients", {"mrn": "1", "given_name": "A", "family_name": "B", "date_of_birth": "not a date"},
     "date_of_birth"),
    ("allergies", {"patient_id": 1, "substance_name": "x", "severity": "terrible"}, "severity"),
    ("medications", {"name": "x", "form": "tablet", "unit": "mg", "colour": "red"}, "colour"),
    ("prescriptions", {"patient_id": 1, "medication_id": 1, "dose_amount": 0, "dose_unit": "mg", "route": "oral",
                       "prn": True, "start_date": "2026-01-01", "prescriber": "x"}, "dose_amount"),
    ("prescriptions", {"patient_id": 1, "medication_id": 1, "dose_amount": 1, "dose_unit": "mg", "route": "oral",
                       "times_of_day": ["25:00"], "start_date": "2026-01-01", "prescriber": "x"}, "times_of_day.0"),
    ("inventory-lots", {"medication_id": 1, "lot_number": "x", "quantity": -1, "expires_on": "2027-01-01"},
     "quantity"),
])
def test_invalid_fields_are_named(client: FlaskClient, alice: Key, path: str, body: dict[str, Any],
                                  field: str) -> None:
    problem = assert_problem(client.post(f"/v1/{path}", headers=alice.headers, json=body), 422)
    assert field in [e["field"] for e in problem["errors"]]


def test_null_is_refused_for_required_fields_on_update(client: FlaskClient, alice: Key) -> None:
    patient = setup(client, alice)["patient"]
    problem = assert_problem(client.patch(f"/v1/patients/{patient['id']}", headers=alice.headers,
                                          json={"given_name": None}), 422)
    assert problem["errors"][0]["field"] == "given_name"


def test_duplicate_identifiers_conflict(client: FlaskClient, alice: Key) -> None:
    setup(client, alice)
    again = client.post("/v1/patients", headers=alice.headers, json={
        "student_number": "S-1", "given_name": "B", "family_name": "C", "date_of_birth": "2014-01-01"})
    assert "uq_patients_org_student_number" in assert_problem(again, 409)["detail"]


def test_organisations_are_isolated(client: FlaskClient, alice: Key, bob: Key) -> None:
    rows = setup(client, alice)
    for path, key in (("patients", "patient"), ("medications", "medication"), ("allergies", "allergy"),
                      ("prescriptions", "prescription"), ("inventory-lots", "lot")):
        row_id = rows[key]["id"]
        assert_problem(client.get(f"/v1/{path}/{row_id}", headers=bob.headers), 404)
        assert_problem(client.patch(f"/v1/{path}/{row_id}", headers=bob.headers, json={}), 404)
        assert client.get(f"/v1/{path}", headers=bob.headers).get_json()["items"] == []
    borrowed = client.post("/v1/allergies", headers=bob.headers, json={
        "patient_id": rows["patient"]["id"], "substance_name": "x", "severity": "mild"})
    assert assert_problem(borrowed, 422)["errors"][0]["field"] == "patient_id"


def test_scopes(client: FlaskClient, reader: Key) -> None:
    assert_problem(client.get("/v1/patients"), 401)
    assert_problem(client.get("/v1/patients", headers=reader.headers), 403)


def test_the_organisation_time_zone_is_validated_scoped_and_admin_only(client: FlaskClient, alice: Key, bob: Key,
                                                                      clean: Runtime) -> None:
    assert client.patch("/v1/organisation", json={"timezone": "Europe/Berlin"}, headers=alice.headers).status_code == 403
    admin = make_key(clean, "org-a", ["admin"])
    bad = client.patch("/v1/organisation", json={"timezone": "Mars/Olympus"}, headers=admin.headers)
    assert bad.status_code == 422 and bad.json["errors"][0]["field"] == "timezone"
    changed = client.patch("/v1/organisation", json={"timezone": "Europe/Berlin"}, headers=admin.headers)
    assert changed.status_code == 200 and changed.json["timezone"] == "Europe/Berlin"
    assert client.get("/v1/organisation", headers=alice.headers).json["timezone"] == "Europe/Berlin"
    assert client.get("/v1/organisation", headers=bob.headers).json["timezone"] == "UTC"


def test_appointments_need_an_aware_start_before_the_end(client: FlaskClient, alice: Key) -> None:
    patient = client.post("/v1/patients", json={"mrn": "A-1", "given_name": "Ana", "family_name": "Ruiz",
                                                "date_of_birth": "2015-02-03"}, headers=alice.headers).json
    naive = client.post("/v1/appointments", json={"patient_id": patient["id"], "start": "2026-12-03T09:00:00"},
                        headers=alice.headers)
    assert naive.status_code == 422 and naive.json["errors"][0]["field"] == "start"
    backwards = client.post("/v1/appointments", json={"patient_id": patient["id"], "start": "2026-12-03T09:00:00Z",
                                                      "end": "2026-12-03T08:00:00Z"}, headers=alice.headers)
    assert backwards.status_code == 422
    made = client.post("/v1/appointments", json={"patient_id": patient["id"], "start": "2026-12-03T09:00:00+01:00",
                                                 "description": "Vision screening"}, headers=alice.headers)
    assert made.status_code == 201 and made.json["status"] == "booked" and made.json["source"] == "api"
    listed = client.get(f"/v1/appointments?patient_id={patient['id']}", headers=alice.headers).json["items"]
    assert [a["id"] for a in listed] == [made.json["id"]]
