"""Callers' job endpoints: isolation, status, listing, cancellation, idempotency, problems."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import func, select, text

from app.models import Job
from app.runtime import Runtime
from tests.integration.api.conftest import Key

PROBLEM = "application/problem+json"


def probe(client: FlaskClient, key: Key, **kwargs) -> dict:  # type: ignore[no-untyped-def, type-arg]
    response = client.post("/v1/probes", headers=key.headers, **kwargs)
    assert response.status_code == 202, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def assert_problem(response, status: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == status
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://") and body["detail"]
    return body  # type: ignore[no-any-return]


def job_count(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Job)) or 0)


def test_probe_is_accepted_durably_and_readable(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    response = client.post("/v1/probes", headers=alice.headers, json={"queue": "critical"})
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert (job["kind"], job["queue"], job["status"]) == ("maintenance.ping", "critical", "queued")
    assert Queue("critical", connection=clean.redis).get_job_ids() == [str(job["id"])]
    shown = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).get_json()
    assert shown["status"] == "queued" and shown["attempts"] == 0 and shown["links"]["self"] == f"/v1/jobs/{job['id']}"


def test_missing_or_invalid_key_is_401(client: FlaskClient, alice: Key) -> None:
    job = probe(client, alice)
    for headers in ({}, {"Authorization": "Bearer trg_nope_nope"}, {"Authorization": "Basic abc"}):
        for method, path in (("get", f"/v1/jobs/{job['id']}"), ("get", "/v1/jobs"), ("post", "/v1/probes"),
                             ("post", f"/v1/jobs/{job['id']}/cancel")):
            response = getattr(client, method)(path, headers=headers)
            assert_problem(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_is_401(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    from app.services.clients import authenticate, revoke_client

    with clean.sessions.begin() as session:
        caller = authenticate(session, alice.token)
        assert caller is not None and revoke_client(session, caller.client_id)
    assert_problem(client.get("/v1/jobs", headers=alice.headers), 401)


def test_key_without_the_scope_is_403(client: FlaskClient, alice: Key, reader: Key) -> None:
    job = probe(client, alice)
    assert_problem(client.post("/v1/probes", headers=reader.headers), 403)
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=reader.headers), 403)
    assert client.get(f"/v1/jobs/{job['id']}", headers=reader.headers).status_code == 200


def test_another_organisations_job_is_404(client: FlaskClient, alice: Key, bob: Key) -> None:
    job = probe(client, alice)
    assert_problem(client.get(f"/v1/jobs/{job['id']}", headers=bob.headers), 404)
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=bob.headers), 404)
    assert client.get("/v1/jobs", headers=bob.headers).get_json()["items"] == []
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).get_json()["status"] == "queued"


def test_listing_filters_and_pages_with_a_cursor(client: FlaskClient, alice: Key) -> None:
    ids = [probe(client, alice)["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice.headers)
    first = client.get("/v1/jobs?limit=2", headers=alice.headers).get_json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    second = client.get(f"/v1/jobs?limit=2&cursor={first['next_cursor']}", headers=alice.headers).get_json()
    assert [j["id"] for j in second["items"]] == ids[::-1][2:4]
    cancelled = client.get("/v1/jobs?status=cancelled", headers=alice.headers).get_json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert client.get("/v1/jobs?kind=other.kind", headers=alice.headers).get_json()["items"] == []


def test_bad_query_parameters_are_422_naming_each(client: FlaskClient, alice: Key) -> None:
    body = assert_problem(client.get("/v1/jobs?status=exploded&limit=0&since=yesterday", headers=alice.headers), 422)
    assert {(e["location"], e["field"]) for e in body["errors"]} == {
        ("query", "status"), ("query", "limit"), ("query", "since"),
    }
    assert_problem(client.get("/v1/jobs?cursor=!!!", headers=alice.headers), 422)


def test_cancel_withdraws_a_waiting_job_and_refuses_a_finished_one(
    client: FlaskClient, alice: Key, clean: Runtime
) -> None:
    job = probe(client, alice)
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers)
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert Queue("maintenance", connection=clean.redis).get_job_ids() == []
    assert_problem(client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers), 409)
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running'"))
    running = probe(client, alice)
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running' WHERE id = :id"), {"id": running["id"]})
    assert_problem(client.post(f"/v1/jobs/{running['id']}/cancel", headers=alice.headers), 409)


def test_problem_shapes_for_each_error_class(client: FlaskClient, alice: Key, app: Flask) -> None:
    malformed = assert_problem(
        client.post("/v1/probes", headers=alice.headers, data="{not json", content_type="application/json"), 400
    )
    assert malformed["errors"][0]["location"] == "body"
    wrong_type = assert_problem(client.post("/v1/probes", headers=alice.headers, data="queue=critical",
                                            content_type="text/plain"), 415)
    assert wrong_type["errors"][0]["field"] == "Content-Type"
    invalid = assert_problem(client.post("/v1/probes", headers=alice.headers, json={"queue": "nowhere", "x": 1}), 422)
    assert {e["field"] for e in invalid["errors"]} == {"queue", "x"}
    too_big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    assert_problem(client.post("/v1/probes", headers=alice.headers, data=too_big, content_type="application/json"), 413)
    assert_problem(client.get("/v1/no-such-thing", headers=alice.headers), 404)
    assert_problem(client.delete("/v1/jobs", headers=alice.headers), 405)


def test_idempotent_replay_returns_the_first_response(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    headers = {**alice.headers, "Idempotency-Key": "abc-1"}
    first = client.post("/v1/probes", headers=headers, json={"queue": "critical"})
    again = client.post("/v1/probes", headers=headers, json={"queue": "critical"})
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json() and again.headers["Location"] == first.headers["Location"]
    assert "Idempotent-Replayed" not in first.headers
    assert job_count(clean) == 1


def test_same_key_different_request_is_422(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    headers = {**alice.headers, "Idempotency-Key": "abc-2"}
    client.post("/v1/probes", headers=headers, json={"queue": "critical"})
    body = assert_problem(client.post("/v1/probes", headers=headers, json={"queue": "reports"}), 422)
    assert body["errors"][0]["field"] == "Idempotency-Key"
    assert job_count(clean) == 1


def test_keys_are_scoped_per_client(client: FlaskClient, alice: Key, bob: Key, clean: Runtime) -> None:
    client.post("/v1/probes", headers={**alice.headers, "Idempotency-Key": "shared"})
    response = client.post("/v1/probes", headers={**bob.headers, "Idempotency-Key": "shared"})
    assert response.status_code == 202 and "Idempotent-Replayed" not in response.headers
    assert job_count(clean) == 2


def test_same_key_in_flight_is_409(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    from app.services.clients import authenticate

    with clean.sessions() as session:
        caller = authenticate(session, alice.token)
    assert caller is not None
    with clean.engine.connect() as holder, holder.begin():  # the first request, still in its transaction
        holder.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                       {"k": f"idempotency:{caller.client_id}:abc-3"})
        response = client.post("/v1/probes", headers={**alice.headers, "Idempotency-Key": "abc-3"})
        assert_problem(response, 409)
        assert response.headers["Retry-After"] == "1"
    assert job_count(clean) == 0


def test_truly_concurrent_requests_with_one_key_create_one_job(app: Flask, alice: Key, clean: Runtime) -> None:
    headers = {**alice.headers, "Idempotency-Key": "abc-4"}

    def post(_: int) -> tuple[int, int | None]:
        with app.test_client() as own_client:
            response = own_client.post("/v1/probes", headers=headers, json={"queue": "critical"})
            return response.status_code, (response.get_json() or {}).get("id")

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(post, range(16)))
    assert {status for status, _ in results} <= {202, 409}
    assert len({job_id for status, job_id in results if status == 202}) == 1
    assert job_count(clean) == 1


def test_a_first_request_committing_after_the_claim_turns_the_second_into_409_without_a_job(
    client: FlaskClient, alice: Key, clean: Runtime, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.api import jobs as jobs_api

    first = client.post("/v1/probes", headers={**alice.headers, "Idempotency-Key": "abc-5"})
    assert first.status_code == 202
    accept = jobs_api.job_service.accept

    def first_commits_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        # The claim saw no record; the first request's record is committed only now (moved over
        # from "abc-5", as if its transaction had ended between our claim and our store).
        with clean.engine.begin() as conn:
            conn.execute(text("UPDATE idempotency_keys SET key = 'abc-6' WHERE key = 'abc-5'"))
        return accept(*args, **kwargs)

    monkeypatch.setattr(jobs_api.job_service, "accept", first_commits_meanwhile)
    second = client.post("/v1/probes", headers={**alice.headers, "Idempotency-Key": "abc-6"})
    body = assert_problem(second, 409)
    assert body["type"].endswith("idempotency-in-flight") and second.headers["Retry-After"] == "1"
    assert job_count(clean) == 1  # the second request's job was rolled back with it
    monkeypatch.undo()
    replay = client.post("/v1/probes", headers={**alice.headers, "Idempotency-Key": "abc-6"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json()["id"] == first.get_json()["id"]


def test_rate_limit_is_per_key_with_retry_after(limited_app: Flask, alice: Key, bob: Key) -> None:
    with limited_app.test_client() as client:
        assert [client.get("/v1/jobs", headers=alice.headers).status_code for _ in range(3)] == [200] * 3
        limited = client.get("/v1/jobs", headers=alice.headers)
        assert_problem(limited, 429)
        assert int(limited.headers["Retry-After"]) > 0
        assert client.get("/v1/jobs", headers=bob.headers).status_code == 200  # another key, its own budget
        anonymous = [client.get("/v1/jobs").status_code for _ in range(3)]
        assert anonymous == [401, 401, 429]


def test_request_id_is_echoed_or_made_and_stored_with_the_job(client: FlaskClient, alice: Key, clean: Runtime) -> None:
    response = client.post("/v1/probes", headers={**alice.headers, "X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT request_id FROM jobs")).scalar_one() == "req-123"
    made = client.get("/v1/jobs", headers={**alice.headers, "X-Request-ID": "bad id with spaces"})
    assert len(made.headers["X-Request-ID"]) == 32


def test_openapi_describes_every_endpoint_and_docs_render(client: FlaskClient) -> None:
    spec = client.get("/v1/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/probes"} <= set(spec["paths"])
    assert spec["paths"]["/v1/probes"]["post"]["requestBody"]
    assert "Idempotency-Key" in spec["info"]["description"]
    page = client.get("/v1/docs")
    assert page.status_code == 200 and b"/v1/jobs/{job_id}/cancel" in page.data


def test_log_lines_are_json_with_the_request_id(app: Flask, alice: Key, capsys) -> None:  # type: ignore[no-untyped-def]
    import json as jsonlib
    import logging

    from app.logs import configure_logging

    configure_logging("INFO")
    try:
        with app.test_request_context(headers={"X-Request-ID": "req-log-1"}):
            app.preprocess_request()
            logging.getLogger("app.test").info("Job %s: accepted", 42)
    finally:
        logging.getLogger().handlers.clear()
    line = jsonlib.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["message"], line["request_id"], line["levelname"]) == ("Job 42: accepted", "req-log-1", "INFO")
