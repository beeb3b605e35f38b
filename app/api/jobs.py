"""Callers' job endpoints: status, listing, cancellation, and the end-to-end probe."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from flask import Blueprint, Response, g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field

from app.api import app_runtime
from app.api.auth import current_caller, requires
from app.api.idempotency import db, idempotent, transactional
from app.api.openapi import Operation, documented
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import Problem
from app.api.validation import body, query
from app.models import JobStatus
from app.outbox import withdraw
from app.queues import QUEUE_NAMES
from app.services import jobs as job_service
from jobs.maintenance import ping

blueprint = Blueprint("jobs", __name__, url_prefix="/v1")


class JobError(BaseModel):
    """The last error of a job, without its traceback."""

    type: str
    message: str | None


class JobOut(BaseModel):
    """A job as its caller sees it."""

    id: int
    kind: str
    queue: str
    status: Literal["pending", "queued", "running", "retrying", "succeeded", "dead", "cancelled"]
    attempts: int
    max_attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    last_error: JobError | None
    links: dict[str, str]

    @classmethod
    def of(cls, view: job_service.JobView) -> JobOut:
        """The API shape of a ledger view."""
        links = {"self": url_for("jobs.get_job", job_id=view.id)}
        if view.result_ref:
            links["result"] = view.result_ref
        error = JobError(type=view.error_type, message=view.error_message) if view.error_type else None
        return cls(**{k: v for k, v in vars(view).items() if k in cls.model_fields}, last_error=error, links=links)


class JobPage(BaseModel):
    """One page of jobs; pass `next_cursor` as `cursor` for the next."""

    items: list[JobOut]
    next_cursor: str | None


class JobQuery(BaseModel):
    """Filters for listing jobs."""

    model_config = ConfigDict(extra="forbid")

    status: JobStatus | None = None
    kind: str | None = Field(default=None, max_length=100)
    since: datetime | None = None
    cursor: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=200)


@blueprint.get("/jobs/<int:job_id>")
@requires("jobs:read")
@documented(Operation("A job's status, attempts and last error", response=JobOut, errors=(401, 403, 404),
                      tags=("jobs",)))
def get_job(job_id: int) -> Response:
    """The ledger view of one of the caller's jobs (404 for another organisation's)."""
    runtime = app_runtime()
    with runtime.sessions() as session:
        view = _found(lambda: job_service.view(session, job_id, organisation_id=current_caller().organisation_id))
    return jsonify(JobOut.of(view).model_dump(mode="json"))


@blueprint.get("/jobs")
@requires("jobs:read")
@documented(Operation("The caller's jobs, newest first (cursor pagination)", query=JobQuery, response=JobPage,
                      errors=(401, 403, 422), tags=("jobs",)))
def list_jobs() -> Response:
    """Page through the caller's organisation's jobs."""
    params = query(JobQuery)
    runtime = app_runtime()
    with runtime.sessions() as session:
        views = job_service.list_jobs(
            session,
            organisation_id=current_caller().organisation_id,
            status=params.status.value if params.status else None,
            kind=params.kind,
            since=params.since,
            before_id=decode_cursor(params.cursor),
            limit=params.limit,
        )
    cursor = encode_cursor(views[-1].id) if len(views) == params.limit else None
    return jsonify(JobPage(items=[JobOut.of(v) for v in views], next_cursor=cursor).model_dump(mode="json"))


@blueprint.post("/jobs/<int:job_id>/cancel")
@requires("jobs:write")
@documented(Operation("Cancel a job that has not started (409 once running or finished)", response=JobOut,
                      errors=(401, 403, 404, 409), tags=("jobs",)))
def cancel_job(job_id: int) -> Response:
    """Cancel a waiting job; its queue copy is withdrawn after commit."""
    view = _cancel(job_id)
    withdraw(app_runtime().redis, view.id, view.queue)
    return jsonify(JobOut.of(view).model_dump(mode="json"))


@transactional
def _cancel(job_id: int) -> job_service.JobView:
    def run() -> job_service.JobView:
        job = job_service.cancel(db(), job_id, organisation_id=current_caller().organisation_id)
        return job_service.view(db(), job.id, organisation_id=None)

    try:
        return _found(run)
    except job_service.JobStateError as exc:
        raise Problem(409, "Conflict", str(exc), "job-not-cancellable") from None


class ProbeIn(BaseModel):
    """Which queue the probe should travel through (default: maintenance)."""

    model_config = ConfigDict(extra="forbid")

    queue: Literal[QUEUE_NAMES] = "maintenance"  # type: ignore[valid-type]


@blueprint.post("/probes")
@requires("jobs:write")
@idempotent()
@documented(Operation("Submit a no-op probe job that travels the whole pipeline", body=ProbeIn, response=JobOut,
                      status=202, idempotent=True, tags=("jobs",)))
def submit_probe() -> tuple[Response, int, dict[str, str]]:
    """Accept a probe job durably (202 after commit); poll its Location for the outcome."""
    probe = body(ProbeIn) if request.content_length else ProbeIn()
    caller = current_caller()
    job = job_service.accept(
        db(), ping, organisation_id=caller.organisation_id, request_id=g.get("request_id"), queue=probe.queue
    )
    out = JobOut.of(job)
    return jsonify(out.model_dump(mode="json")), 202, {"Location": out.links["self"]}


def _found(load: Callable[[], job_service.JobView]) -> job_service.JobView:
    try:
        return load()
    except job_service.JobNotFoundError:
        raise Problem(404, "Not Found", "No such job.") from None
