"""Operators' endpoints (scope `admin`): queues, pauses, workers, dead letters."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, url_for
from pydantic import BaseModel, ConfigDict, Field

from app.api import app_runtime
from app.api.auth import current_caller, requires
from app.api.idempotency import db, idempotent, transactional
from app.api.openapi import Operation, documented
from app.api.problems import Problem
from app.api.validation import query
from app.queues import UnknownQueueError
from app.services import jobs as job_service
from app.services import operations
from jobs.maintenance import requeue_dead_letters

blueprint = Blueprint("admin", __name__, url_prefix="/v1/admin")
_ADMIN_ERRORS = (401, 403)


class QueueOut(BaseModel):
    """A queue's backlog and state."""

    name: str
    waiting: int
    running: int
    scheduled: int
    failed: int
    dead: int
    oldest_waiting_seconds: float | None
    paused: bool


class WorkerOut(BaseModel):
    """A live worker process."""

    name: str
    queues: list[str]
    state: str
    current_job: str | None
    pid: int | None
    hostname: str | None


class Overview(BaseModel):
    """Every queue in priority order, and the workers serving them."""

    queues: list[QueueOut]
    workers: list[WorkerOut]


class DeadLetterFilter(BaseModel):
    """Which dead letters: by queue, job kind and error type."""

    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(default=None, max_length=50)
    kind: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, max_length=200)


class DeadLetterGroupOut(BaseModel):
    """Dead jobs sharing queue, kind and error type."""

    queue: str
    kind: str
    error_type: str | None
    count: int
    oldest_id: int
    newest_id: int


class DeadLetterList(BaseModel):
    """Dead letters grouped by error."""

    total: int
    groups: list[DeadLetterGroupOut]


class AttemptOut(BaseModel):
    """One attempt of a job."""

    attempt: int
    outcome: str
    worker: str | None
    started_at: datetime | None
    finished_at: datetime
    error_type: str | None
    error_message: str | None


class DeadLetterOut(BaseModel):
    """Everything about one dead job, for an operator."""

    id: int
    organisation_id: int
    kind: str
    queue: str
    arguments: list[Any]
    attempts: int
    max_attempts: int
    error_type: str | None
    error_message: str | None
    traceback: str | None
    created_at: datetime
    finished_at: datetime | None
    history: list[AttemptOut]


class BulkRequeueOut(BaseModel):
    """A bulk requeue accepted as a background job."""

    matched: int
    job: str


def _json(model: BaseModel, status: int = 200) -> tuple[Response, int]:
    return jsonify(model.model_dump(mode="json")), status


@blueprint.get("/queues")
@requires("admin")
@documented(Operation("Queues (waiting, running, scheduled, failed, dead, oldest age, paused) and workers",
                      response=Overview, errors=_ADMIN_ERRORS, tags=("admin",)))
def queues() -> tuple[Response, int]:
    """The state of every queue and worker."""
    runtime = app_runtime()
    with runtime.sessions() as session:
        states = operations.queue_states(session, runtime.redis)
    workers = operations.worker_states(runtime.redis)
    return _json(Overview(queues=[QueueOut(**asdict(s)) for s in states],
                          workers=[WorkerOut(**asdict(w)) for w in workers]))


def _pause(name: str, paused: bool) -> tuple[Response, int]:
    runtime = app_runtime()
    try:
        operations.set_paused(runtime.redis, name, paused)
    except UnknownQueueError:
        raise Problem(404, "Not Found", f"No queue named {name!r}.") from None
    with runtime.sessions() as session:
        state = next(s for s in operations.queue_states(session, runtime.redis) if s.name == name)
    return _json(QueueOut(**asdict(state)))


@blueprint.post("/queues/<name>/pause")
@requires("admin")
@documented(Operation("Pause a queue: workers stop taking its jobs; the API still accepts them",
                      audit="queue.pause", audit_resource="Queue", response=QueueOut, errors=(401, 403, 404), tags=("admin",)))
def pause(name: str) -> tuple[Response, int]:
    """Workers skip this queue until it is resumed."""
    return _pause(name, True)


@blueprint.post("/queues/<name>/resume")
@requires("admin")
@documented(Operation("Resume a paused queue", audit="queue.resume", audit_resource="Queue", response=QueueOut, errors=(401, 403, 404), tags=("admin",)))
def resume(name: str) -> tuple[Response, int]:
    """Workers take this queue's jobs again."""
    return _pause(name, False)


@blueprint.get("/dead-letters")
@requires("admin")
@documented(Operation("Dead jobs grouped by queue, kind and error type", query=DeadLetterFilter,
                      response=DeadLetterList, errors=(401, 403, 422), tags=("admin",)))
def dead_letters() -> tuple[Response, int]:
    """Group the dead letters so an operator sees what broke, and how often."""
    params = query(DeadLetterFilter)
    with app_runtime().sessions() as session:
        groups = operations.dead_letter_groups(session, **params.model_dump())
    items = [DeadLetterGroupOut(**asdict(g)) for g in groups]
    return _json(DeadLetterList(total=sum(g.count for g in items), groups=items))


@blueprint.get("/dead-letters/<int:job_id>")
@requires("admin")
@documented(Operation("One dead job: full error, traceback, attempt history and arguments",
                      audit="dead_letter.read", audit_resource="Job",
                      response=DeadLetterOut, errors=(401, 403, 404), tags=("admin",)))
def dead_letter(job_id: int) -> tuple[Response, int]:
    """Everything needed to decide whether to requeue or purge."""
    with app_runtime().sessions() as session:
        try:
            job, attempts = operations.dead_letter(session, job_id)
        except job_service.JobNotFoundError:
            raise Problem(404, "Not Found", f"No dead job {job_id}.") from None
        history = [AttemptOut.model_validate(a, from_attributes=True) for a in attempts]
        out = DeadLetterOut(
            id=job.id, organisation_id=job.organisation_id, kind=job.kind, queue=job.queue, arguments=job.arguments,
            attempts=job.attempts, max_attempts=job.max_attempts, error_type=job.last_error_type,
            error_message=job.last_error_message, traceback=job.last_error_traceback, created_at=job.created_at,
            finished_at=job.finished_at, history=history,
        )
    return _json(out)


@blueprint.post("/dead-letters/<int:job_id>/requeue")
@requires("admin")
@documented(Operation("Run a dead job again with fresh attempts",
                      audit="dead_letter.requeue", audit_resource="Job", errors=(401, 403, 404, 409), status=202,
                      tags=("admin",)))
@transactional
def requeue(job_id: int) -> tuple[Response, int]:
    """Requeue one dead job (enqueued after commit)."""
    try:
        job_service.requeue_dead(db(), job_id)
    except job_service.JobNotFoundError:
        raise Problem(404, "Not Found", f"No job {job_id}.") from None
    except job_service.JobStateError as exc:
        raise Problem(409, "Conflict", str(exc), "job-not-dead") from None
    return jsonify({"id": job_id, "status": "queued", "links": {"job": f"/v1/admin/dead-letters/{job_id}"}}), 202


@blueprint.post("/dead-letters/requeue")
@requires("admin")
@idempotent()
@documented(Operation("Requeue every dead job matching a filter, as a background job",
                      audit="dead_letter.requeue_bulk", audit_resource="Job", body=DeadLetterFilter,
                      response=BulkRequeueOut, status=202, idempotent=True, errors=(401, 403), tags=("admin",)))
def bulk_requeue() -> tuple[Response, int, dict[str, str]]:
    """Accept a bulk requeue; the background job notes `requeued:N` as its result."""
    from app.api.validation import body

    params = body(DeadLetterFilter)
    matched = len(operations.dead_letter_ids(db(), **params.model_dump()))
    job = job_service.submit(db(), requeue_dead_letters, params.queue, params.kind, params.error,
                             organisation_id=current_caller().organisation_id)
    location = url_for("jobs.get_job", job_id=job.id)
    return jsonify(BulkRequeueOut(matched=matched, job=location).model_dump()), 202, {"Location": location}


@blueprint.delete("/dead-letters/<int:job_id>")
@requires("admin")
@documented(Operation("Purge a dead job: cancelled for good, removed from RQ (audited)",
                      audit="dead_letter.purge", audit_resource="Job", status=204,
                      errors=(401, 403, 404, 409), tags=("admin",)))
def purge(job_id: int) -> tuple[str, int]:
    """Give up on a dead job; the purge is recorded in its attempt history with the operator."""
    queue_name = _purge(job_id)
    operations.forget_failed(app_runtime().redis, job_id, queue_name)
    return "", 204


@transactional
def _purge(job_id: int) -> str:
    actor = f"admin:{current_caller().client_id}"
    try:
        return operations.purge_dead_letter(db(), job_id, actor=actor)
    except job_service.JobNotFoundError:
        raise Problem(404, "Not Found", f"No dead job {job_id}.") from None
    except job_service.JobStateError as exc:
        raise Problem(409, "Conflict", str(exc), "job-not-dead") from None
