"""Maintenance job kinds: the pipeline's own probes and housekeeping."""

from __future__ import annotations

from rq import get_current_job
from sqlalchemy import update

from app.models import Job
from app.runtime import current
from app.services import idempotency
from app.services.jobs import requeue_dead
from app.services.operations import dead_letter_ids
from jobs.spec import job_kind


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
        idempotency.prune(session)
