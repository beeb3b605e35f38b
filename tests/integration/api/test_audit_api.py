"""Every request to a PHI endpoint writes exactly one audit record — success, 401, 403 and 404 alike —
and the audit log is readable (JSON and FHIR AuditEvent), scoped, and per patient."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from flask.testing import FlaskClient
from sqlalchemy import select

from app.models import AuditEvent
from app.runtime import Runtime
from jobs.reports import generate
from tests.integration.api.conftest import Key, make_key

PATIENT = {"mrn": "MRN-77", "given_name": "Zoë", "family_name": "Müller", "date_of_birth": "2014-03-02"}


def audited_operations(client: FlaskClient) -> list[tuple[str, str, str, str]]:
    """(method, path, action, scope) of every audited operation in the OpenAPI document."""
    spec = client.get("/v1/openapi.json").json
    found = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            if "x-audit-action" in op:
                scope = re.search(r"scope `([^`]+)`", op["description"])
                found.append((method.upper(), path, op["x-audit-action"], scope.group(1) if scope else ""))
    return found


def records(runtime: Runtime) -> list[AuditEvent]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def call(client: FlaskClient, method: str, path: str, headers: dict[str, str]) -> Any:
    url = re.sub(r"\{[^}]+\}", "999999", path)
    return client.open(url, method=method, headers=headers, json={} if method in ("POST", "PATCH", "PUT") else None)


def test_the_phi_endpoints_are_all_audited(client: FlaskClient) -> None:
    actions = {action for _, _, action, _ in audited_operations(client)}
    assert {"patient.read", "patient.create", "administration.create", "administration.read", "fhir.read",
            "fhir.search", "hl7_message.create", "hl7_message.read", "report.export", "report.read",
            "immunization.read", "appointment.read", "dead_letter.purge", "webhook_endpoint.rotate_secret",
            "audit_event.list", "patient.access_report"} <= actions


#: Routes that touch no patient data and change nothing an auditor must see: not audited on success
#: (their failed authentication and authorisation still are). Every other route must be audited.
NOT_AUDITED = {
    ("GET", "/health"), ("GET", "/health/live"), ("GET", "/health/ready"), ("GET", "/v1/admin/alerts"),
    ("GET", "/v1/admin/alerts/channels"), ("GET", "/v1/admin/breakers"), ("GET", "/v1/admin/dead-letters"),
    ("GET", "/v1/admin/queues"), ("GET", "/v1/admin/schedules"), ("GET", "/v1/alerts"), ("GET", "/v1/alerts/channels"),
    ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"), ("POST", "/v1/jobs/{job_id}/cancel"), ("POST", "/v1/probes"),
    ("GET", "/v1/organisation"), ("GET", "/v1/webhooks/deliveries"), ("GET", "/v1/webhooks/deliveries/{delivery_id}"),
    ("GET", "/v1/webhooks/endpoints"), ("GET", "/v1/webhooks/endpoints/{endpoint_id}"),
    ("POST", "/v1/webhooks/endpoints/{endpoint_id}/test"),
    *((method, f"/v1/{path}{suffix}") for path in ("medications", "inventory-lots", "immunization-requirements")
      for method, suffix in (("GET", ""), ("POST", ""), ("GET", "/{row_id}"), ("PATCH", "/{row_id}"))),
}


def test_every_route_is_audited_or_knowingly_not(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").json
    unaudited = {(method.upper(), path) for path, methods in spec["paths"].items()
                 for method, op in methods.items() if "x-audit-action" not in op}
    assert unaudited == NOT_AUDITED  # a new route must choose: audited, or listed here with a reason


def test_every_audited_endpoint_records_one_record_for_401_403_and_404(client: FlaskClient, clean: Runtime) -> None:
    outsider = make_key(clean, "org-o", ["metrics:read"])  # a valid key without any of the scopes
    insider = make_key(clean, "org-i", ["admin"])
    for method, path, action, _ in audited_operations(client):
        # the insider reaches the view: a missing id (404), an empty body (422), or a bulk action on nothing (202)
        for headers, expected in (({}, {401}), (outsider.headers, {403}),
                                  (insider.headers, {200, 202, 400, 404, 409, 415, 422})):
            before = len(records(clean))
            answer = call(client, method, path, headers)
            assert answer.status_code in expected, (method, path, answer.status_code, answer.json)
            new = records(clean)[before:]
            assert len(new) == 1, (method, path, answer.status_code, [r.action for r in new])
            record = new[0]
            status = answer.status_code
            outcome = "success" if status < 400 else "denied" if status in (401, 403, 404) else "error"
            assert (record.action, record.outcome) == (action, outcome), (method, path)
            assert record.actor_id == (None if not headers else f"client:{_client_id(clean, headers)}")
            assert record.request_id == answer.headers["X-Request-ID"]


def _client_id(runtime: Runtime, headers: dict[str, str]) -> int:
    from app.models import ApiClient

    prefix = headers["Authorization"].removeprefix("Bearer ").split("_")[1]
    with runtime.sessions() as session:
        return session.scalars(select(ApiClient.id).where(ApiClient.key_prefix.contains(prefix))).one()


def test_a_read_and_a_change_record_the_patient_and_the_row(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    made = client.post("/v1/patients", json=PATIENT, headers=alice.headers)
    patient_id = made.json["id"]
    client.get(f"/v1/patients/{patient_id}", headers=alice.headers)
    allergy = client.post("/v1/allergies", json={"patient_id": patient_id, "substance_name": "Peanut",
                                                 "severity": "severe"}, headers=alice.headers).json
    found = [(r.action, r.outcome, r.resource_type, r.resource_id, r.patient_id, r.organisation_id)
             for r in records(clean)]
    assert found == [("patient.create", "success", "Patient", str(patient_id), str(patient_id), alice.organisation_id),
                     ("patient.read", "success", "Patient", str(patient_id), str(patient_id), alice.organisation_id),
                     ("allergy.create", "success", "Allergy", str(allergy["id"]), str(patient_id),
                      alice.organisation_id)]
    assert all(r.user_agent and r.source_ip for r in records(clean))


def test_a_change_whose_commit_fails_is_recorded_once_as_an_error(client: FlaskClient, alice: Key,
                                                                   clean: Runtime) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    failures = iter([OperationalError("COMMIT", {}, Exception("server closed the connection"))])

    def commit_fails_once(session: Any) -> None:
        if session.in_nested_transaction():  # a savepoint released inside the view: not the commit
            return
        failure = next(failures, None)
        if failure is not None:
            raise failure

    event.listen(clean.sessions, "before_commit", commit_fails_once)
    try:
        response = client.post("/v1/patients", json=PATIENT, headers=alice.headers)
    finally:
        event.remove(clean.sessions, "before_commit", commit_fails_once)
    assert response.status_code == 503
    found = [(r.action, r.outcome) for r in records(clean)]
    assert found == [("patient.create", "error")]  # the success record went with the rolled-back change


def test_non_phi_endpoints_audit_only_failed_authentication(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    assert client.get("/v1/medications", headers=alice.headers).status_code == 200
    assert records(clean) == []
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer trg_nope_nope"}).status_code == 401
    (record,) = records(clean)
    assert (record.action, record.outcome, record.organisation_id, record.chain) == ("auth.failed", "denied", None, 0)


@pytest.fixture()
def auditor(clean: Runtime, alice: Key) -> Key:
    """An `audit:read` key of alice's organisation."""
    return make_key(clean, "org-a", ["audit:read"])


def test_audit_events_are_filtered_paginated_and_scoped(client: FlaskClient, alice: Key, bob: Key, auditor: Key,
                                                       clean: Runtime) -> None:
    patient_id = client.post("/v1/patients", json=PATIENT, headers=alice.headers).json["id"]
    for _ in range(3):
        client.get(f"/v1/patients/{patient_id}", headers=alice.headers)
    client.post("/v1/patients", json={**PATIENT, "mrn": "B-1"}, headers=bob.headers)
    page = client.get(f"/v1/audit-events?patient={patient_id}&action=patient.read&limit=2", headers=auditor.headers)
    assert page.status_code == 200 and len(page.json["items"]) == 2 and page.json["next_cursor"]
    rest = client.get(f"/v1/audit-events?patient={patient_id}&action=patient.read&limit=2&cursor="
                      f"{page.json['next_cursor']}", headers=auditor.headers).json
    assert len(rest["items"]) == 1
    everything = client.get("/v1/audit-events?limit=200", headers=auditor.headers).json["items"]
    assert {r["organisation_id"] for r in everything} == {alice.organisation_id}  # never bob's
    clinician = make_key(clean, "org-a", ["clinical:read", "clinical:write"])
    assert client.get("/v1/audit-events", headers=clinician.headers).status_code == 403  # no audit:read


def test_audit_events_as_fhir_audit_events(client: FlaskClient, alice: Key, auditor: Key) -> None:
    patient_id = client.post("/v1/patients", json=PATIENT, headers=alice.headers).json["id"]
    client.get(f"/v1/patients/{patient_id}", headers=alice.headers)
    bundle = client.get(f"/v1/audit-events?format=fhir&patient={patient_id}", headers=auditor.headers)
    assert bundle.content_type == "application/fhir+json"
    entries = bundle.json["entry"]
    assert [e["resource"]["action"] for e in entries] == ["R", "C"]
    for entry in entries:
        FhirAuditEvent.model_validate(entry["resource"])
        assert entry["resource"]["entity"][0]["what"]["reference"] == f"Patient/{patient_id}"


def test_the_access_report_says_who_touched_the_patient(client: FlaskClient, alice: Key, bob: Key, auditor: Key,
                                                       clean: Runtime) -> None:
    patient_id = client.post("/v1/patients", json=PATIENT, headers=alice.headers).json["id"]
    for _ in range(2):
        client.get(f"/v1/patients/{patient_id}", headers=alice.headers)
    report = client.get(f"/v1/patients/{patient_id}/access-report", headers=auditor.headers)
    assert report.status_code == 200
    by_action = {a["action"]: a for a in report.json["accesses"]}
    assert by_action["patient.read"]["count"] == 2 and by_action["patient.create"]["count"] == 1
    assert client.get(f"/v1/patients/{patient_id}/access-report", headers=make_key(
        clean, "org-b", ["audit:read"]).headers).status_code == 404
    with clean.sessions() as session:  # the reports themselves were audited, the other organisation's as denied
        found = session.execute(select(AuditEvent.organisation_id, AuditEvent.outcome).where(
            AuditEvent.action == "patient.access_report", AuditEvent.patient_id == str(patient_id))
            .order_by(AuditEvent.id)).all()
    assert [outcome for _, outcome in found] == ["success", "denied"]
    assert found[0][0] == alice.organisation_id and found[1][0] != alice.organisation_id


def test_jobs_audit_their_changes_to_patient_data(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    patient_id = client.post("/v1/patients", json=PATIENT, headers=alice.headers).json["id"]
    asked = client.post("/v1/reports", json={"type": "student_health_summary", "parameters": {"patient_id": patient_id}},
                        headers=alice.headers).json
    generate(asked["id"])
    (record,) = [r for r in records(clean) if r.action == "report.generate"]
    assert (record.actor_type, record.actor_id, record.patient_id, record.resource_id) == (
        "system", f"job:{asked['job_id']}", str(patient_id), str(asked["id"]))


def test_behind_a_proxy_the_record_has_the_clients_address(clean: Runtime, alice: Key) -> None:
    from dataclasses import replace

    from app import create_app

    proxied = create_app(runtime=replace(clean, settings=replace(clean.settings, proxy_hops=1))).test_client()
    direct = create_app(runtime=clean).test_client()
    for client in (proxied, direct):
        client.get("/v1/patients", headers={**alice.headers, "X-Forwarded-For": "203.0.113.7"})
    assert [r.source_ip for r in records(clean)] == ["203.0.113.7", "127.0.0.1"]  # never trusted unless configured
