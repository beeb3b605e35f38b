"""Administrations through outages: PostgreSQL down → 503 and nothing half-written; Redis down →
accepted into the ledger and recorded once Redis is back (reconciler + worker, real processes)."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import create_engine, text

from app import create_app
from app.models import Administration
from app.runtime import Runtime
from app.services.clients import create_client
from app.services.organisations import ensure_organisation
from tests.conftest import Processes, ledger, wait_for
from tests.integration.api.conftest import make_key
from tests.integration.api.test_jobs_api import assert_problem
from tests.integration.api.test_outages import throwaway  # noqa: F401 - the throwaway PostgreSQL fixture
from tests.support.clinic import seed_clinic
from tests.support.servers import Postgres, answers, free_port, start_redis, stop

SCOPES = ["administrations:write", "administrations:read"]


def counts(database_url: str) -> tuple[int, int, int]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT (SELECT count(*) FROM administrations), (SELECT count(*) FROM jobs),"
                                " (SELECT count(*) FROM idempotency_keys)")).one()
    engine.dispose()
    return row[0], row[1], row[2]


def test_postgres_down_answers_503_and_writes_nothing(throwaway: tuple[Postgres, Runtime]) -> None:  # noqa: F811
    server, runtime = throwaway
    with runtime.sessions.begin() as session:
        org = ensure_organisation(session, "outage-clinic")
        clinic = seed_clinic(session, org.id)
        _, token = create_client(session, organisation_id=org.id, name="device", scopes=SCOPES)
    client = create_app(runtime=runtime).test_client()
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "offline-1"}
    record = clinic.record()
    server.stop()
    assert assert_problem(client.post("/v1/administrations", headers=headers, json=record), 503)
    down = client.post("/v1/administrations/batch", headers=headers, json={"records": [record]})
    assert_problem(down, 503)
    assert down.headers["Retry-After"] == "5"
    server.start()
    assert counts(runtime.settings.database_url) == (0, 0, 0)  # nothing half-written
    again = client.post("/v1/administrations", headers=headers, json=record)  # the device retries
    assert again.status_code == 202
    assert counts(runtime.settings.database_url) == (1, 1, 1)


def test_redis_down_still_accepts_and_records_after_it_returns(clean: Runtime, procs: Processes) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    servers = [start_redis(port)]
    runtime = Runtime.build(replace(clean.settings, redis_url=url))
    try:
        wait_for(lambda: answers(port), what="throwaway redis")
        key = make_key(clean, "redis-outage", SCOPES)
        with clean.sessions.begin() as session:
            clinic = seed_clinic(session, key.organisation_id)
        client = create_app(runtime=runtime).test_client()
        stop(servers[0])
        response = client.post("/v1/administrations", headers={**key.headers, "Idempotency-Key": "r-1"},
                               json=clinic.record())
        assert response.status_code == 202  # the ledger has it: accepted while Redis is down
        adm = response.get_json()["administration"]
        assert ledger(clean, adm["job_id"]).status == "pending"
        servers.append(start_redis(port))
        wait_for(lambda: answers(port), what="redis to return")
        procs.start("scheduler", env={"REDIS_URL": url})
        procs.worker("critical", env={"REDIS_URL": url})
        wait_for(lambda: _status(clean, adm["id"]) == "recorded", what="the administration to be recorded")
        # The job's commit comes before the worker records the attempt: wait for that too.
        wait_for(lambda: ledger(clean, adm["job_id"]).status == "succeeded", what="the job to be recorded")
    finally:
        runtime.close()
        for server in servers:
            stop(server)


def _status(runtime: Runtime, administration_id: int) -> str:
    with runtime.sessions() as session:
        return session.get_one(Administration, administration_id).status
