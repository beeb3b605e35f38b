"""PostgreSQL stopped (a throwaway cluster): 503 with Retry-After, nothing half-written; back → 202."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from app import create_app
from app.migrate import upgrade
from app.runtime import Runtime
from app.services.clients import create_client
from app.services.organisations import ensure_organisation
from tests.integration.api.test_jobs_api import assert_problem
from tests.support.servers import Postgres, free_port, postgres_available

pytestmark = pytest.mark.skipif(not postgres_available(), reason="initdb/pg_ctl (or the postgres user) missing")


@pytest.fixture()
def throwaway(clean: Runtime) -> Iterator[tuple[Postgres, Runtime]]:
    # Not under pytest's tmp_path: that is private to root, and the cluster runs as postgres.
    directory = Path(tempfile.mkdtemp(prefix="triage-pg-"))
    server = Postgres(directory / "data", free_port()).init()
    server.start()
    runtime = Runtime.build(replace(clean.settings, database_url=server.url.replace("postgresql://",
                                                                                       "postgresql+psycopg2://")))
    try:
        upgrade(runtime.settings.database_url)
        yield server, runtime
    finally:
        runtime.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def test_api_answers_503_while_postgres_is_down_and_accepts_again_after(
    throwaway: tuple[Postgres, Runtime],
) -> None:
    server, runtime = throwaway
    with runtime.sessions.begin() as session:
        org = ensure_organisation(session, "outage-org")
        _, token = create_client(session, organisation_id=org.id, name="k", scopes=["jobs:write", "jobs:read"])
    client = create_app(runtime=runtime).test_client()
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "during-outage"}
    assert client.post("/v1/probes", headers={**headers, "Idempotency-Key": "before"}).status_code == 202
    server.stop()
    response = client.post("/v1/probes", headers=headers)
    assert_problem(response, 503)
    assert response.headers["Retry-After"] == "5"
    assert client.get("/health/ready").status_code == 503
    server.start()
    again = client.post("/v1/probes", headers=headers)
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    engine = create_engine(runtime.settings.database_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 2
        assert conn.execute(text("SELECT count(*) FROM idempotency_keys")).scalar_one() == 2
    engine.dispose()


def test_hl7_over_http_answers_ae_while_postgres_is_down(throwaway: tuple[Postgres, Runtime]) -> None:
    server, runtime = throwaway
    with runtime.sessions.begin() as session:
        org = ensure_organisation(session, "hl7-outage-org")
        _, token = create_client(session, organisation_id=org.id, name="k", scopes=["hl7:write"])
    client = create_app(runtime=runtime).test_client()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "x-application/hl7-v2+er7"}
    message = b"MSH|^~\\&|A|F|R|RF|20260101||ADT^A01|%s|P|2.5\rPID|1||1^^^MRN^MR||DOE^JOHN"
    server.stop()
    down = client.post("/v1/hl7/messages", data=message % b"DOWN", headers=headers)
    assert down.status_code == 503 and down.json["ack_code"] == "AE" and "\rMSA|AE|DOWN" in down.json["ack"]
    server.start()
    assert client.post("/v1/hl7/messages", data=message % b"DOWN", headers=headers).status_code == 202
