"""Maintenance job kinds: the pipeline's own probes and housekeeping."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from rq import get_current_job
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.models import Job
from app.runtime import current
from app.services import idempotency, privacy, retention
from app.services.jobs import requeue_dead
from app.services.operations import dead_letter_ids
from jobs import auditing
from jobs.spec import job_kind

log = logging.getLogger(__name__)


@job_kind("maintenance.ping", queue="maintenance", timeout=10, max_attempts=1)
def ping() -> None:
    """Do nothing: proves a job can travel ledger → Redis → worker → ledger (probes, benchmarks)."""


@job_kind("maintenance.requeue_dead_letters", queue="maintenance", timeout=300, max_attempts=3)
def requeue_dead_letters(queue: str | None, kind: str | None, error: str | None) -> None:
    """Requeue every dead job matching the filter; note how many on this job's own ledger row."""
    runtime = current()
    with runtime.sessions.begin() as session:
        ids = dead_letter_ids(session, queue=queue, kind=kind, error=error)
        for job_id in ids:
            requeue_dead(session, job_id)
        this = get_current_job()
        if this is not None and this.id.isdigit():
            session.execute(update(Job).where(Job.id == int(this.id)).values(result_ref=f"requeued:{len(ids)}"))


@job_kind("maintenance.prune_idempotency_keys", queue="maintenance", timeout=300, max_attempts=3)
def prune_idempotency_keys() -> None:
    """Forget Idempotency-Key responses past their retention (record ids still stop resends)."""
    with current().sessions.begin() as session:
        removed = idempotency.prune(session)
        _audit_pruning(session, "idempotency_keys", removed)


@job_kind("maintenance.prune_retention", queue="maintenance", timeout=1800, max_attempts=3)
def prune_retention() -> None:
    """Remove finished ledger jobs, raw HL7 and webhook attempts past their retention (one
    transaction and one audit record per table)."""
    runtime = current()
    settings, now = runtime.settings, datetime.now(UTC)
    days = {"jobs": settings.ledger_retention_days, "hl7_messages": settings.hl7_retention_days,
            "webhook_attempts": settings.webhook_attempt_retention_days}
    for table, pruner in retention.PRUNERS.items():
        before = retention.cutoff(now, days[table])
        with runtime.sessions.begin() as session:
            removed = pruner(session, before)
            _audit_pruning(session, table, removed, before)
        log.info("Retention: %s rows of %s before %s removed", removed, table, before.date())
    with runtime.sessions.begin() as session:
        exports = privacy.prune_bundles(session, now - timedelta(days=settings.report_retention_days))
        _audit_pruning(session, "privacy_requests.bundle", exports)
        abandoned = privacy.fail_abandoned(session)
    log.info("Retention: %s patient exports removed, %s abandoned privacy requests failed", exports, abandoned)


def _audit_pruning(session: Session, table: str, removed: int, before: datetime | None = None) -> None:
    """Pruning is audited: which table, up to when, how many rows (the audit record's resource id)."""
    cut = f" before {before:%Y-%m-%d}" if before else ""
    auditing.record(session, "retention.prune", organisation_id=None, resource_type=table,
                    resource_id=f"{removed} rows{cut}")
