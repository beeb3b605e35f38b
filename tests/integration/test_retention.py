"""Retention: old rows in final states go, younger rows and rows awaiting review stay, and every
pass is audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, select

from app.models import AuditEvent, Hl7Message, Job, PrivacyRequest
from app.runtime import Runtime
from jobs.maintenance import prune_retention

NOW = datetime.now(UTC)


def job(runtime: Runtime, org_id: int, status: str, age_days: int) -> int:
    with runtime.sessions.begin() as session:
        return session.execute(insert(Job).values(
            organisation_id=org_id, kind="maintenance.ping", queue="maintenance", arguments=[], status=status,
            max_attempts=1, finished_at=NOW - timedelta(days=age_days)).returning(Job.id)).scalar_one()


def message(runtime: Runtime, org_id: int, status: str, age_days: int) -> int:
    with runtime.sessions.begin() as session:
        return session.execute(insert(Hl7Message).values(
            organisation_id=org_id, transport="http", sender="APP^FAC", message_type="ADT", trigger="A01",
            version="2.5", control_id=f"{status}-{age_days}", charset="utf-8", raw=b"MSH|...", size=7, status=status,
            ack="MSA|AA", ack_code="AA", received_at=NOW - timedelta(days=age_days)).returning(Hl7Message.id)).scalar_one()


def test_only_old_rows_in_final_states_are_pruned_and_each_pass_is_audited(clean: Runtime, org_id: int) -> None:
    jobs = {name: job(clean, org_id, status, age) for name, status, age in (
        ("old-done", "succeeded", 40), ("old-cancelled", "cancelled", 40), ("young-done", "succeeded", 10),
        ("old-dead", "dead", 400))}
    messages = {name: message(clean, org_id, status, age) for name, status, age in (
        ("old-processed", "processed", 100), ("young-processed", "processed", 30), ("old-failed", "failed", 400),
        ("old-rejected", "rejected", 400))}
    prune_retention()  # defaults: jobs 30 days, HL7 90 days, webhook attempts 30 days
    with clean.sessions() as session:
        kept_jobs = set(session.scalars(select(Job.id)))
        kept_messages = set(session.scalars(select(Hl7Message.id)))
        audited = session.execute(select(AuditEvent.action, AuditEvent.resource_type, AuditEvent.resource_id,
                                         AuditEvent.actor_type).order_by(AuditEvent.id)).all()
    assert kept_jobs == {jobs["young-done"], jobs["old-dead"]}
    assert kept_messages == {messages["young-processed"], messages["old-failed"], messages["old-rejected"]}
    assert [(a, t, r.split(" ")[0], who) for a, t, r, who in audited] == [
        ("retention.prune", "jobs", "2", "system"), ("retention.prune", "hl7_messages", "1", "system"),
        ("retention.prune", "webhook_attempts", "0", "system"),
        ("retention.prune", "privacy_requests.bundle", "0", "system")]


def test_old_exports_are_dropped_and_requests_whose_job_died_fail(clean: Runtime, org_id: int) -> None:
    dead = job(clean, org_id, "dead", 1)
    with clean.sessions.begin() as session:
        def request(status: str, finished_days: int | None, job_id: int | None) -> int:
            return session.execute(insert(PrivacyRequest).values(
                organisation_id=org_id, patient_id=1, type="access", status=status, due_at=NOW,
                job_id=job_id, bundle={"resourceType": "Bundle"} if status == "completed" else None,
                finished_at=NOW - timedelta(days=finished_days) if finished_days is not None else None)
                .returning(PrivacyRequest.id)).scalar_one()

        old, young, stuck = request("completed", 40, None), request("completed", 3, None), request("running", None, dead)
    prune_retention()
    with clean.sessions() as session:
        rows = {r.id: r for r in session.scalars(select(PrivacyRequest))}
    assert rows[old].bundle is None and rows[young].bundle is not None  # 30 days, like PDFs
    assert rows[stuck].status == "failed" and rows[stuck].error == "its job ended without fulfilling the request"
