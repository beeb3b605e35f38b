"""Administrations over HTTP: Idempotency-Key required, one MAR row per record however it arrives,
batches, corrections under optimistic locking, the MAR and safety events, isolation."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, Worker
from sqlalchemy import func, select, text, update

from app.models import Administration, IdempotencyRecord, RecordConflict
from app.runtime import Runtime
from app.services import idempotency
from jobs.administrations import record_administration
from tests.conftest import Processes, wait_for
from tests.integration.api.conftest import Key
from tests.integration.api.test_jobs_api import assert_problem
from tests.support.clinic import Clinic, add_allergy, seed_clinic


@pytest.fixture()
def clinic(clean: Runtime, alice: Key) -> Clinic:
    with clean.sessions.begin() as session:
        return seed_clinic(session, alice.organisation_id)


def post(client: FlaskClient, key: Key, record: dict[str, Any], idem: str | None = None) -> Any:
    headers = {**key.headers, "Idempotency-Key": idem or uuid.uuid4().hex}
    return client.post("/v1/administrations", headers=headers, json=record)


def count(runtime: Runtime, model: type[Any] = Administration) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_idempotency_key_is_required(client: FlaskClient, alice: Key, clinic: Clinic, clean: Runtime) -> None:
    response = client.post("/v1/administrations", headers=alice.headers, json=clinic.record())
    body = assert_problem(response, 400)
    assert body["errors"] == [{"location": "header", "field": "Idempotency-Key", "reason": "required"}]
    assert count(clean) == 0


def test_accepted_record_is_queued_on_critical_and_recorded_by_its_job(
    client: FlaskClient, alice: Key, clinic: Clinic, clean: Runtime,
) -> None:
    response = post(client, alice, clinic.record())
    assert response.status_code == 202
    body = response.get_json()
    adm = body["administration"]
    assert body["arrival"] == "accepted" and adm["status"] == "received" and adm["version"] == 1
    assert body["job"] == {"id": adm["job_id"], "status": "queued"}
    assert response.headers["Location"] == f"/v1/administrations/{adm['id']}"
    assert Queue("critical", connection=clean.redis).job_ids == [str(adm["job_id"])]
    job = client.get(body["links"]["job"], headers=alice.headers).get_json()
    assert job["kind"] == "administrations.record" and job["queue"] == "critical"
    assert job["links"]["result"] == f"/v1/administrations/{adm['id']}"
    before = client.get(f"/v1/administrations/{adm['id']}", headers=alice.headers).get_json()
    assert before["job"] == {"id": adm["job_id"], "status": "queued"}
    record_administration(adm["id"])
    after = client.get(f"/v1/administrations/{adm['id']}", headers=alice.headers)
    assert after.get_json()["status"] == "recorded" and after.headers["ETag"] == '"1"'


def test_ten_concurrent_requests_with_one_record_store_one_row(
    app: Flask, alice: Key, clinic: Clinic, clean: Runtime,
) -> None:
    record = clinic.record()

    def send(i: int) -> tuple[int, int]:
        with app.test_client() as own:
            response = post(own, alice, record, idem=f"device-retry-{i}")  # ten keys, one record
            return response.status_code, response.get_json()["administration"]["id"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(send, range(10)))
    assert sorted(status for status, _ in results) == [200] * 9 + [202]
    assert len({adm_id for _, adm_id in results}) == 1
    assert count(clean) == 1
    assert len(Queue("critical", connection=clean.redis).job_ids) == 1


def test_one_key_sent_concurrently_creates_one_row(app: Flask, alice: Key, clinic: Clinic, clean: Runtime) -> None:
    record = clinic.record()

    def send(_: int) -> tuple[int, bool]:
        with app.test_client() as own:
            response = post(own, alice, record, idem="same-key")
            return response.status_code, "Idempotent-Replayed" in response.headers

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(send, range(10)))
    assert {status for status, _ in results} <= {202, 409}  # the first answer, replayed, or "in flight"
    assert [replayed for status, replayed in results if status == 202].count(False) == 1
    assert count(clean) == 1


def test_resync_after_the_idempotency_key_expired_is_recognised(
    client: FlaskClient, alice: Key, clinic: Clinic, clean: Runtime,
) -> None:
    record = clinic.record()
    assert post(client, alice, record, idem="k1").status_code == 202
    with clean.sessions.begin() as session:  # months later: the key's stored response is long gone
        session.execute(update(IdempotencyRecord).values(created_at=func.now() - text("interval '90 days'")))
        assert idempotency.prune(session) == 1
    again = post(client, alice, record, idem="k1")
    assert again.status_code == 200 and "Idempotent-Replayed" not in again.headers
    assert again.get_json()["arrival"] == "already_recorded"
    assert count(clean) == 1


def test_prune_keeps_keys_younger_than_72_hours(clean: Runtime, client: FlaskClient, alice: Key,
                                                clinic: Clinic) -> None:
    post(client, alice, clinic.record(), idem="young")
    with clean.sessions.begin() as session:
        session.execute(update(IdempotencyRecord).values(created_at=func.now() - text("interval '71 hours'")))
        assert idempotency.prune(session, older_than_hours=1) == 0
    assert count(clean, IdempotencyRecord) == 1


def test_same_record_id_with_other_content_is_refused_and_flagged(
    client: FlaskClient, alice: Key, clinic: Clinic, clean: Runtime,
) -> None:
    record = clinic.record()
    first = post(client, alice, record).get_json()["administration"]
    response = post(client, alice, {**record, "dose_amount": 1000})
    body = assert_problem(response, 422)
    assert body["errors"][0]["field"] == "record_id" and body["administration_id"] == first["id"]
    stored = client.get(f"/v1/administrations/{first['id']}", headers=alice.headers).get_json()
    assert stored["dose_amount"] == 500 and stored["conflicts"] == 1
    assert_problem(post(client, alice, {**record, "dose_amount": 1000}), 422)  # the device retries it
    assert client.get(f"/v1/administrations/{first['id']}", headers=alice.headers).get_json()["conflicts"] == 1
    assert count(clean) == 1 and count(clean, RecordConflict) == 1


@pytest.mark.parametrize(("given_at", "reason"), [
    ("2999-01-01T08:00:00+00:00", "is in the future"),
    ("0001-01-01T08:00:00+05:00", "is before 2000"),
    ("2026-11-30T08:00:00", "timezone"),
])
def test_given_at_must_be_a_plausible_instant(client: FlaskClient, alice: Key, clinic: Clinic, given_at: str,
                                              reason: str) -> None:
    body = assert_problem(post(client, alice, clinic.record(given_at=given_at)), 422)
    assert body["errors"][0]["field"] == "given_at" and reason in body["errors"][0]["reason"]


def test_batch_with_mixed_records_answers_each_and_a_resend_is_harmless(
    client: FlaskClient, alice: Key, bob: Key, clinic: Clinic, clean: Runtime,
) -> None:
    with clean.sessions.begin() as session:
        foreign = seed_clinic(session, bob.organisation_id)
    good = [clinic.record(given_at=f"2026-11-30T{h:02d}:00:00+00:00") for h in (8, 14, 20)]
    bad_field = clinic.record(dose_amount=-1)
    foreign_patient = clinic.record(patient_id=foreign.patient_id)
    changed = {**good[0], "dose_amount": 250}
    batch = {"records": [good[0], bad_field, good[1], foreign_patient, good[2], changed, good[0]]}
    response = client.post("/v1/administrations/batch", headers=alice.headers, json=batch)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["result"] for r in results] == ["accepted", "rejected", "accepted", "rejected", "accepted",
                                              "rejected", "already_recorded"]
    assert results[1]["errors"][0]["field"] == "dose_amount"
    assert results[3]["errors"][0]["field"] == "patient_id"
    assert results[5]["errors"][0]["field"] == "record_id"
    assert response.get_json()["counts"] == {"accepted": 3, "already_recorded": 1, "rejected": 3}
    assert count(clean) == 3
    resend = client.post("/v1/administrations/batch", headers=alice.headers, json=batch).get_json()
    assert [r["result"] for r in resend["results"]].count("already_recorded") == 4
    assert count(clean) == 3
    assert len(Queue("critical", connection=clean.redis).job_ids) == 3


def test_batch_over_500_records_is_refused(client: FlaskClient, alice: Key, clinic: Clinic) -> None:
    body = assert_problem(client.post("/v1/administrations/batch", headers=alice.headers,
                                      json={"records": [clinic.record() for _ in range(501)]}), 422)
    assert body["errors"][0]["field"] == "records"


def test_correction_needs_the_current_version_and_keeps_the_original(
    client: FlaskClient, alice: Key, clinic: Clinic, clean: Runtime,
) -> None:
    adm_id = post(client, alice, clinic.record()).get_json()["administration"]["id"]
    url = f"/v1/administrations/{adm_id}"
    assert_problem(client.patch(url, headers=alice.headers, json={"reason": "x", "notes": "n"}), 428)
    ok = client.patch(url, headers={**alice.headers, "If-Match": '"1"'},
                      json={"reason": "typo", "notes": "took it with water", "side_effects": "none"})
    assert ok.status_code == 200 and ok.get_json()["version"] == 2 and ok.headers["ETag"] == '"2"'
    stale = client.patch(url, headers={**alice.headers, "If-Match": "1"}, json={"reason": "late", "notes": "other"})
    assert assert_problem(stale, 409)["current_version"] == 2 and stale.headers["ETag"] == '"2"'
    by_body = client.patch(url, headers=alice.headers, json={"version": 2, "reason": "r", "notes": "final"})
    assert by_body.get_json()["version"] == 3
    for field, value in (("dose_amount", 1), ("given_at", "2026-11-30T09:00:00Z"), ("administered_by", None)):
        refused = client.patch(url, headers={**alice.headers, "If-Match": "3"}, json={"reason": "r", field: value})
        assert assert_problem(refused, 422)["errors"][0]["field"] == field
    record = client.get(url, headers=alice.headers).get_json()
    assert record["notes"] == "final" and record["dose_amount"] == 500
    assert [(r["version"], r["before"], r["after"]) for r in record["revisions"]] == [
        (1, {"notes": None, "side_effects": None}, {"notes": "took it with water", "side_effects": "none"}),
        (2, {"notes": "took it with water"}, {"notes": "final"}),
    ]


def test_mar_and_safety_events(client: FlaskClient, alice: Key, clinic: Clinic, clean: Runtime) -> None:
    with clean.sessions.begin() as session:
        add_allergy(session, clinic, "penicillin", "moderate")
    ids = []
    for hour in (8, 14):
        adm = post(client, alice, clinic.record(given_at=f"2026-11-30T{hour:02d}:00:00+00:00")).get_json()
        ids.append(adm["administration"]["id"])
        record_administration(ids[-1])
    mar = client.get(f"/v1/patients/{clinic.patient_id}/administrations",
                     query_string={"from": "2026-11-30T12:00:00Z", "to": "2026-12-01T00:00:00Z"},
                     headers=alice.headers).get_json()
    assert [a["id"] for a in mar["items"]] == [ids[1]] and mar["items"][0]["status"] == "blocked"
    events = client.get("/v1/safety-events", query_string={"type": "ALLERGY_BLOCKED"}, headers=alice.headers)
    assert [(e["administration_id"], e["severity"]) for e in events.get_json()["items"]] == [
        (ids[1], "HIGH"), (ids[0], "HIGH")]
    assert client.get("/v1/safety-events", query_string={"type": "DUPLICATE_PREVENTED"},
                      headers=alice.headers).get_json()["items"] == []
    detail = client.get(f"/v1/administrations/{ids[0]}", headers=alice.headers).get_json()
    assert detail["safety_event"]["event_type"] == "ALLERGY_BLOCKED"


def test_other_organisations_cannot_see_or_use_these_records(
    client: FlaskClient, alice: Key, bob: Key, clinic: Clinic, clean: Runtime,
) -> None:
    adm_id = post(client, alice, clinic.record()).get_json()["administration"]["id"]
    assert_problem(client.get(f"/v1/administrations/{adm_id}", headers=bob.headers), 404)
    assert_problem(client.patch(f"/v1/administrations/{adm_id}", headers={**bob.headers, "If-Match": "1"},
                                json={"reason": "r", "notes": "n"}), 404)
    assert_problem(client.get(f"/v1/patients/{clinic.patient_id}/administrations", headers=bob.headers), 404)
    stolen = post(client, bob, clinic.record())
    assert assert_problem(stolen, 422)["errors"][0]["field"] == "patient_id"
    assert count(clean) == 1


def test_scopes_are_required(client: FlaskClient, reader: Key, clinic: Clinic) -> None:
    assert_problem(post(client, reader, clinic.record()), 403)
    assert_problem(client.get("/v1/safety-events", headers=reader.headers), 403)
    assert_problem(client.get("/v1/safety-events"), 401)


def test_a_batch_is_decided_by_a_worker_without_waiting_for_the_reconciler(
    client: FlaskClient, alice: Key, clinic: Clinic, clean: Runtime, procs: Processes,
) -> None:
    procs.worker("critical")  # no scheduler: a job pushed before its commit would be skipped for good
    wait_for(lambda: [w for w in Worker.all(connection=clean.redis) if w.get_state() == "idle"],
             what="the worker to wait on its queue")
    records = [clinic.record(given_at=f"2026-11-30T{h:02d}:00:00+00:00") for h in (8, 14, 20)]
    response = client.post("/v1/administrations/batch", headers=alice.headers, json={"records": records})
    ids = [r["administration_id"] for r in response.get_json()["results"]]

    def decided() -> bool:
        with clean.sessions() as session:
            rows = session.scalars(select(Administration).where(Administration.id.in_(ids))).all()
            return len(rows) == 3 and all(r.status == "recorded" for r in rows)

    wait_for(decided, timeout=30, what="the batch's three records to be recorded")
