"""The operator CLI: clients, queues, dead-letter purge."""

from __future__ import annotations

from sqlalchemy import select, text

from app.models import AuditEvent
from app.runtime import Runtime
from app.services.clients import authenticate
from app.services.jobs import submit
from app.services.operations import paused_queues
from tests.conftest import Processes, ledger, outcomes, wait_for
from tests.support.kinds import flaky


def test_clients_create_prints_a_working_key_once_and_revoke_stops_it(clean: Runtime, procs: Processes) -> None:
    output = procs.run("clients", "create", "--org", "clinic", "--scopes", "jobs:read,admin")
    key = next(word for word in output.split() if word.startswith("trg_"))
    with clean.sessions() as session:
        caller = authenticate(session, key)
    assert caller is not None and caller.scopes == {"jobs:read", "admin"}
    assert key not in procs.run("clients", "list")
    procs.run("clients", "revoke", str(caller.client_id))
    with clean.sessions() as session:
        assert authenticate(session, key) is None
        audited = session.execute(select(AuditEvent.action, AuditEvent.actor_type, AuditEvent.resource_id)
                                  .order_by(AuditEvent.id)).all()
    assert "unknown scope" in procs.run("clients", "create", "--org", "clinic", "--scopes", "root", expect_code=1)
    assert audited == [("api_client.create", "operator", str(caller.client_id)),
                       ("api_client.revoke", "operator", str(caller.client_id))]


def test_queues_pause_resume_and_overview(clean: Runtime, procs: Processes) -> None:
    procs.run("queues", "pause", "reports")
    assert paused_queues(clean.redis) == {"reports"}
    assert "reports\t0\t0\t0\t0\t0\t-\tyes" in procs.run("queues")
    procs.run("queues", "resume", "reports")
    assert paused_queues(clean.redis) == set()


def test_dlq_purge_records_the_actor(clean: Runtime, procs: Processes, org_id: int) -> None:
    with clean.sessions.begin() as session:
        job_id = submit(session, flaky, "p1", 1, True, organisation_id=org_id).id
    procs.worker("critical")
    wait_for(lambda: ledger(clean, job_id).status == "dead", what="dead letter")
    procs.run("dlq", "purge", str(job_id), "--actor", "cli:nurse-ops")
    assert ledger(clean, job_id).status == "cancelled" and outcomes(clean, job_id) == ["dead", "purged"]
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT worker FROM job_attempts WHERE outcome = 'purged'")).scalar() == "cli:nurse-ops"
        purge = conn.execute(text("SELECT action, actor_id, resource_id FROM audit_events")).one()
    assert tuple(purge) == ("dead_letter.purge", "cli:nurse-ops", str(job_id))


def test_demo_seed_creates_a_usable_organisation_once(procs: Processes, clean: Runtime) -> None:
    from app import create_app

    first = procs.run("demo", "seed")
    key = next(word for word in first.split() if word.startswith("trg_"))
    assert "4 patients" in first and "5 prescriptions" in first
    assert "already seeded" in procs.run("demo", "seed")
    client = create_app(runtime=clean).test_client()
    headers = {"Authorization": f"Bearer {key}"}
    patients = client.get("/v1/patients", headers=headers).get_json()["items"]
    prescriptions = client.get("/v1/prescriptions", headers=headers).get_json()["items"]
    assert len(patients) == 4 and len(prescriptions) == 5
    assert client.get("/v1/allergies", headers=headers).get_json()["items"][0]["severity"] == "life-threatening"
