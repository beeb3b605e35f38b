"""Submitting work to the ledger, reading a job's status, requeueing dead jobs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select, update
from sqlalchemy.orm import Session

from app.models import Job, JobStatus
from app.outbox import Outgoing, stage
from app.queues import policy_for
from jobs.spec import JobSpec, spec_for


class InvalidJobArgumentsError(ValueError):
    """Job arguments that are not a list of plain JSON values."""


class JobNotFoundError(LookupError):
    """No such job in this organisation."""


class JobStateError(RuntimeError):
    """The job is not in a state that allows the operation."""


def _check_json(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidJobArgumentsError(f"{path}: {value!r} is not a finite number")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidJobArgumentsError(f"{path}: object key {key!r} is not a string")
            _check_json(item, f"{path}.{key}")
        return
    raise InvalidJobArgumentsError(f"{path}: {type(value).__name__} is not JSON (pass ids, not objects)")


def _new_row(
    func: Callable[..., Any] | str, args: tuple[Any, ...], *, organisation_id: int, idempotency_key: str | None,
    request_id: str | None, queue: str | None, max_attempts: int | None,
) -> dict[str, Any]:
    spec: JobSpec = spec_for(func)
    _check_json(list(args), "arguments")
    return {
        "organisation_id": organisation_id,
        "kind": spec.kind,
        "queue": policy_for(queue).name if queue else spec.queue,
        "arguments": json.loads(json.dumps(list(args))),
        # Queued at commit: the outbox pushes it to Redis right after, or marks it pending if it cannot.
        "status": JobStatus.QUEUED.value,
        "attempts": 0,
        "max_attempts": max_attempts or spec.max_attempts,
        "idempotency_key": idempotency_key,
        "request_id": request_id,
    }


def submit(
    session: Session,
    func: Callable[..., Any] | str,
    *args: Any,
    organisation_id: int,
    idempotency_key: str | None = None,
    request_id: str | None = None,
    queue: str | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Write a job to the ledger in the caller's transaction; it is enqueued after commit.

    `max_attempts` overrides the kind's limit for this job (e.g. a webhook endpoint's own schedule).
    """
    row = _new_row(func, args, organisation_id=organisation_id, idempotency_key=idempotency_key,
                   request_id=request_id, queue=queue, max_attempts=max_attempts)
    job = Job(**row)
    session.add(job)
    session.flush()
    stage(session, Outgoing(job.id, job.kind, job.queue, job.arguments))
    return job


@dataclass(frozen=True)
class JobView:
    """What a caller may see of a job: no arguments, no traceback."""

    id: int
    kind: str
    queue: str
    status: str
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    error_type: str | None
    error_message: str | None
    result_ref: str | None


_JOBS = cast(Table, Job.__table__)
#: Built once, so its cache key and compiled form are reused by every request.
_INSERT = insert(_JOBS).returning(_JOBS.c.id, _JOBS.c.created_at, _JOBS.c.updated_at)


def accept(
    session: Session,
    func: Callable[..., Any] | str,
    *args: Any,
    organisation_id: int,
    request_id: str | None = None,
    queue: str | None = None,
) -> JobView:
    """`submit` for a boundary that answers with the new job's view and needs no ORM object.

    The same ledger row and after-commit enqueue, written with one Core `INSERT … RETURNING`
    instead of a unit-of-work flush (the API's hot path).
    """
    row = _new_row(func, args, organisation_id=organisation_id, idempotency_key=None, request_id=request_id,
                   queue=queue, max_attempts=None)
    new = session.execute(_INSERT, row).one()
    stage(session, Outgoing(new.id, row["kind"], row["queue"], row["arguments"]))
    return JobView(id=new.id, kind=row["kind"], queue=row["queue"], status=row["status"], attempts=0,
                   max_attempts=row["max_attempts"], created_at=new.created_at, updated_at=new.updated_at,
                   started_at=None, finished_at=None, next_attempt_at=None, error_type=None, error_message=None,
                   result_ref=None)


def _get(session: Session, job_id: int, organisation_id: int | None, *, lock: bool = False) -> Job:
    query = select(Job).where(Job.id == job_id)
    if organisation_id is not None:
        query = query.where(Job.organisation_id == organisation_id)
    if lock:
        query = query.with_for_update()
    job = session.scalars(query).one_or_none()
    if job is None:
        raise JobNotFoundError(f"job {job_id} not found")
    return job


def view(session: Session, job_id: int, *, organisation_id: int | None) -> JobView:
    """The ledger view of one job (organisation_id=None: any organisation, for operators)."""
    return _as_view(_get(session, job_id, organisation_id))


def requeue_dead(session: Session, job_id: int, *, organisation_id: int | None = None) -> Job:
    """Give a dead job a fresh set of attempts and enqueue it after commit."""
    job = _get(session, job_id, organisation_id, lock=True)
    if job.status != JobStatus.DEAD.value:
        raise JobStateError(f"job {job_id} is {job.status}, not dead")
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(status=JobStatus.QUEUED.value, attempts=0, next_attempt_at=None, finished_at=None,
                updated_at=func.now())
    )
    stage(session, Outgoing(job.id, job.kind, job.queue, job.arguments, from_dead=True))
    from app.services import alerts  # alerts submit jobs through this module

    alerts.resolve(session, job.organisation_id, "critical_dead_letter", str(job.id))
    return job


def _as_view(job: Job) -> JobView:
    return JobView(
        id=job.id,
        kind=job.kind,
        queue=job.queue,
        status=job.status,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        next_attempt_at=job.next_attempt_at,
        error_type=job.last_error_type,
        error_message=job.last_error_message,
        result_ref=job.result_ref,
    )


def list_jobs(
    session: Session,
    *,
    organisation_id: int,
    status: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[JobView]:
    """An organisation's jobs, newest first, after the `before_id` cursor."""
    query = select(Job).where(Job.organisation_id == organisation_id).order_by(Job.id.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    if kind:
        query = query.where(Job.kind == kind)
    if since:
        query = query.where(Job.created_at >= since)
    if before_id:
        query = query.where(Job.id < before_id)
    return [_as_view(job) for job in session.scalars(query)]


def cancel(session: Session, job_id: int, *, organisation_id: int | None) -> Job:
    """Cancel a job that has not started; a worker then skips any copy still in Redis."""
    job = _get(session, job_id, organisation_id, lock=True)
    if job.status not in (JobStatus.PENDING.value, JobStatus.QUEUED.value, JobStatus.RETRYING.value):
        raise JobStateError(f"job {job_id} is {job.status}; only waiting jobs can be cancelled")
    job.status = JobStatus.CANCELLED.value
    job.finished_at = job.updated_at = datetime.now().astimezone()
    session.flush()
    return job
