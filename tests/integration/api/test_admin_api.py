"""Operators' endpoints: admin-only, queue state, pause/resume, the dead-letter round trip."""

from __future__ import annotations

from flask.testing import FlaskClient
from rq.registry import FailedJobRegistry

from app.runtime import Runtime
from app.services.jobs import submit
from schedules import sync
from schedules.catalogue import SCHEDULES
from schedules.process import build_scheduler
from tests.conftest import Processes, effects, ledger, outcomes, wait_for
from tests.integration.api.conftest import Key
from tests.integration.api.test_jobs_api import assert_problem
from tests.support.kinds import effect, flaky

ADMIN_ROUTES = [
    ("get", "/v1/admin/queues"),
    ("post", "/v1/admin/queues/critical/pause"),
    ("post", "/v1/admin/queues/critical/resume"),
    ("get", "/v1/admin/dead-letters"),
    ("get", "/v1/admin/dead-letters/1"),
    ("post", "/v1/admin/dead-letters/1/requeue"),
    ("post", "/v1/admin/dead-letters/requeue"),
    ("delete", "/v1/admin/dead-letters/1"),
]


def dead_job(runtime: Runtime, procs: Processes, org_id: int, token: str) -> int:
    with runtime.sessions.begin() as session:
        job_id = submit(session, flaky, token, 1, True, organisation_id=org_id).id
    if not any(p.poll() is None for p in procs.started):
        procs.worker("critical", "maintenance")
    wait_for(lambda: ledger(runtime, job_id).status == "dead", what="job to be dead-lettered")
    return job_id


def test_admin_routes_need_an_admin_key(client: FlaskClient, alice: Key) -> None:
    for method, path in ADMIN_ROUTES:
        assert_problem(getattr(client, method)(path), 401)
        assert_problem(getattr(client, method)(path, headers=alice.headers, json={}), 403)


def test_queue_overview_counts_waiting_jobs_in_priority_order(client: FlaskClient, admin: Key, alice: Key) -> None:
    for queue in ("reports", "reports", "critical"):
        client.post("/v1/probes", headers=alice.headers, json={"queue": queue})
    overview = client.get("/v1/admin/queues", headers=admin.headers).get_json()
    names = [q["name"] for q in overview["queues"]]
    assert names == ["critical", "hl7.inbound", "hl7.outbound", "webhooks", "reminders", "reports", "maintenance"]
    waiting = {q["name"]: q["waiting"] for q in overview["queues"]}
    assert (waiting["critical"], waiting["reports"], waiting["webhooks"]) == (1, 2, 0)
    reports = next(q for q in overview["queues"] if q["name"] == "reports")
    assert reports["oldest_waiting_seconds"] is not None and reports["paused"] is False
    assert_problem(client.post("/v1/admin/queues/nowhere/pause", headers=admin.headers), 404)


def test_pause_stops_consumption_and_resume_restarts_it(
    client: FlaskClient, admin: Key, clean: Runtime, procs: Processes, org_id: int
) -> None:
    assert client.post("/v1/admin/queues/critical/pause", headers=admin.headers).get_json()["paused"] is True
    procs.worker("critical", "reports")
    with clean.sessions.begin() as session:
        held = submit(session, effect, "held", organisation_id=org_id).id
        probe = submit(session, "tests.report_effect", "flows", organisation_id=org_id).id
    wait_for(lambda: ledger(clean, probe).status == "succeeded", what="the unpaused queue to flow")
    assert ledger(clean, held).status == "queued"  # the worker was free, yet skipped the paused queue
    assert effects(clean, "held") == []
    overview = client.get("/v1/admin/queues", headers=admin.headers).get_json()
    assert next(q for q in overview["queues"] if q["name"] == "critical")["waiting"] == 1
    client.post("/v1/admin/queues/critical/resume", headers=admin.headers)
    wait_for(lambda: ledger(clean, held).status == "succeeded", what="resumed queue to flow")


def test_dead_letter_list_detail_requeue_round_trip(
    client: FlaskClient, admin: Key, clean: Runtime, procs: Processes, org_id: int
) -> None:
    job_id = dead_job(clean, procs, org_id, "dl1")
    listing = client.get("/v1/admin/dead-letters?queue=critical", headers=admin.headers).get_json()
    assert listing["total"] == 1
    assert listing["groups"][0] == {"queue": "critical", "kind": "tests.flaky", "error_type": "PermanentError",
                                         "count": 1, "oldest_id": job_id, "newest_id": job_id}
    assert client.get("/v1/admin/dead-letters?error=Other", headers=admin.headers).get_json()["total"] == 0
    detail = client.get(f"/v1/admin/dead-letters/{job_id}", headers=admin.headers).get_json()
    assert detail["arguments"] == ["dl1", 1, True] and "simulated failure" in detail["traceback"]
    assert [h["outcome"] for h in detail["history"]] == ["dead"]
    response = client.post(f"/v1/admin/dead-letters/{job_id}/requeue", headers=admin.headers)
    assert response.status_code == 202
    wait_for(lambda: ledger(clean, job_id).status == "succeeded", what="requeued job to succeed")
    assert client.get("/v1/admin/dead-letters", headers=admin.headers).get_json()["total"] == 0
    assert_problem(client.get(f"/v1/admin/dead-letters/{job_id}", headers=admin.headers), 404)
    assert_problem(client.post(f"/v1/admin/dead-letters/{job_id}/requeue", headers=admin.headers), 409)


def test_bulk_requeue_runs_as_a_job_and_reports_how_many(
    client: FlaskClient, admin: Key, clean: Runtime, procs: Processes, org_id: int
) -> None:
    ids = [dead_job(clean, procs, org_id, f"bulk{i}") for i in range(3)]
    response = client.post("/v1/admin/dead-letters/requeue", headers=admin.headers, json={"kind": "tests.flaky"})
    assert response.status_code == 202 and response.get_json()["matched"] == 3
    bulk_id = int(response.headers["Location"].rsplit("/", 1)[1])
    wait_for(lambda: ledger(clean, bulk_id).status == "succeeded", what="bulk requeue job")
    assert ledger(clean, bulk_id).result_ref == "requeued:3"
    wait_for(lambda: all(ledger(clean, i).status == "succeeded" for i in ids), what="requeued jobs to succeed")


def test_purge_cancels_the_dead_job_for_good_and_records_who(
    client: FlaskClient, admin: Key, clean: Runtime, procs: Processes, org_id: int
) -> None:
    job_id = dead_job(clean, procs, org_id, "purge1")
    assert client.delete(f"/v1/admin/dead-letters/{job_id}", headers=admin.headers).status_code == 204
    assert ledger(clean, job_id).status == "cancelled"
    assert outcomes(clean, job_id) == ["dead", "purged"]
    assert FailedJobRegistry("critical", connection=clean.redis).get_job_ids() == []
    assert_problem(client.delete(f"/v1/admin/dead-letters/{job_id}", headers=admin.headers), 409)


def test_operators_see_every_schedule_with_its_next_run(client: FlaskClient, admin: Key, alice: Key,
                                                        clean: Runtime) -> None:
    sync.sync(build_scheduler(clean))
    assert client.get("/v1/admin/schedules", headers=alice.headers).status_code == 403
    listed = client.get("/v1/admin/schedules", headers=admin.headers).json["items"]
    assert [s["id"] for s in listed] == [e.id for e in SCHEDULES]
    assert all(s["next_run_at"] for s in listed)
