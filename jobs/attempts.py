"""Which attempt of its ledger job a job function is running, for state it keeps outside the ledger."""

from __future__ import annotations

from rq import get_current_job
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Job


def running_job_id(job_id: int | None) -> int | None:
    """The ledger id of the job in hand (RQ's current job), else `job_id`."""
    this = get_current_job()
    return int(this.id) if this is not None and this.id.isdigit() else job_id


def attempt_of(attempts: int | None, max_attempts: int | None, attempts_so_far: int) -> tuple[int, bool]:
    """This attempt's number and whether it is the last, from the running job's ledger counters (None
    when there is no such job; 0 attempts outside a worker): then the next after `attempts_so_far`."""
    if attempts is None or max_attempts is None or attempts == 0:
        return attempts_so_far + 1, False
    return attempts, attempts >= max_attempts


def attempt_number(session: Session, job_id: int | None, attempts_so_far: int) -> tuple[int, bool]:
    """This attempt's number and whether it is the last, from the ledger job running it (the job
    in hand, else `job_id`); called outside a worker, the next after `attempts_so_far`, never last."""
    running = running_job_id(job_id)
    row = session.execute(select(Job.attempts, Job.max_attempts).where(Job.id == running)).one_or_none()
    if row is None:
        return attempts_so_far + 1, False
    return attempt_of(row.attempts, row.max_attempts, attempts_so_far)
