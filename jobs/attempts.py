"""Which attempt of its ledger job a job function is running, for state it keeps outside the ledger."""

from __future__ import annotations

from rq import get_current_job
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job


def attempt_number(session: Session, job_id: int | None, attempts_so_far: int) -> tuple[int, bool]:
    """This attempt's number and whether it is the last, from the ledger job running it (the job
    in hand, else `job_id`); called outside a worker, the next after `attempts_so_far`, never last."""
    this = get_current_job()
    running = int(this.id) if this is not None and this.id.isdigit() else job_id
    row = session.execute(select(Job.attempts, Job.max_attempts).where(Job.id == running)).one_or_none()
    if row is None or row.attempts == 0:
        return attempts_so_far + 1, False
    return row.attempts, row.attempts >= row.max_attempts
