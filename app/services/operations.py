"""What operators see and steer: queue state, pauses, workers, dead letters."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq import Queue, Worker
from rq.job import Job as RQJob
from rq.serializers import JSONSerializer
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from app.models import Job, JobAttempt, JobStatus
from app.queues import QUEUE_NAMES, policy_for
from app.services.jobs import JobNotFoundError, JobStateError

#: Redis set of paused queue names; workers skip them, the API still accepts their work.
PAUSED_KEY = "triage:paused-queues"


@dataclass(frozen=True)
class QueueState:
    """One queue at a glance."""

    name: str
    waiting: int
    running: int
    scheduled: int
    failed: int
    dead: int
    oldest_waiting_seconds: float | None
    paused: bool


@dataclass(frozen=True)
class WorkerState:
    """One live worker process."""

    name: str
    queues: list[str]
    state: str
    current_job: str | None
    pid: int | None
    hostname: str | None


def paused_queues(redis: Redis) -> set[str]:
    """Names of the queues workers currently skip."""
    return {m.decode() for m in redis.smembers(PAUSED_KEY)}  # type: ignore[union-attr]


def set_paused(redis: Redis, name: str, paused: bool) -> None:
    """Pause or resume a catalogue queue."""
    policy_for(name)
    if paused:
        redis.sadd(PAUSED_KEY, name)
    else:
        redis.srem(PAUSED_KEY, name)


def _oldest_age(queue: Queue) -> float | None:
    head = queue.get_job_ids(0, 1)
    if not head:
        return None
    job = queue.fetch_job(head[0])
    if job is None or job.enqueued_at is None:
        return None
    return max(0.0, time.time() - job.enqueued_at.replace(tzinfo=UTC).timestamp())


def queue_states(session: Session, redis: Redis) -> list[QueueState]:
    """Every catalogue queue, in priority order."""
    rows = session.execute(select(Job.queue, func.count()).where(Job.status == JobStatus.DEAD.value).group_by(Job.queue))
    dead = {queue: count for queue, count in rows}
    paused = paused_queues(redis)
    states = []
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=redis, serializer=JSONSerializer)
        states.append(
            QueueState(
                name=name,
                waiting=queue.count,
                running=queue.started_job_registry.count,
                scheduled=queue.scheduled_job_registry.count,
                failed=queue.failed_job_registry.count,
                dead=int(dead.get(name, 0)),
                oldest_waiting_seconds=_oldest_age(queue),
                paused=name in paused,
            )
        )
    return states


def worker_states(redis: Redis) -> list[WorkerState]:
    """Every registered worker process with its queues, state and current job."""
    return [
        WorkerState(
            name=worker.name,
            queues=worker.queue_names(),
            state=str(worker.get_state()),
            current_job=worker.get_current_job_id(),
            pid=worker.pid,
            hostname=worker.hostname,
        )
        for worker in Worker.all(connection=redis)
    ]


@dataclass(frozen=True)
class DeadLetterGroup:
    """Dead jobs sharing a queue, kind and error type."""

    queue: str
    kind: str
    error_type: str | None
    count: int
    oldest_id: int
    newest_id: int


def _dead(queue: str | None, kind: str | None, error: str | None) -> Any:
    condition = Job.status == JobStatus.DEAD.value
    if queue:
        condition &= Job.queue == queue
    if kind:
        condition &= Job.kind == kind
    if error:
        condition &= Job.last_error_type == error
    return condition


def dead_letter_groups(
    session: Session, *, queue: str | None = None, kind: str | None = None, error: str | None = None
) -> list[DeadLetterGroup]:
    """Dead jobs grouped by queue, kind and error type, largest group first."""
    rows = session.execute(
        select(Job.queue, Job.kind, Job.last_error_type, func.count(), func.min(Job.id), func.max(Job.id))
        .where(_dead(queue, kind, error))
        .group_by(Job.queue, Job.kind, Job.last_error_type)
        .order_by(func.count().desc())
    ).all()
    return [DeadLetterGroup(*row) for row in rows]


def dead_letter_ids(
    session: Session, *, queue: str | None = None, kind: str | None = None, error: str | None = None
) -> list[int]:
    """Ids of the dead jobs matching a filter, oldest first."""
    return list(session.scalars(select(Job.id).where(_dead(queue, kind, error)).order_by(Job.id)))


def dead_letter(session: Session, job_id: int) -> tuple[Job, list[JobAttempt]]:
    """A dead job with its full error and every attempt."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.DEAD.value:
        raise JobNotFoundError(f"no dead job {job_id}")
    attempts = list(session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id).order_by(JobAttempt.id)))
    return job, attempts


def purge_dead_letter(session: Session, job_id: int, *, actor: str) -> str:
    """Give up on a dead job for good: cancelled in the ledger (audited); returns its queue."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None:
        raise JobNotFoundError(f"no dead job {job_id}")
    if job.status != JobStatus.DEAD.value:
        raise JobStateError(f"job {job_id} is {job.status}, not dead")
    session.execute(
        update(Job).where(Job.id == job_id).values(status=JobStatus.CANCELLED.value, updated_at=func.now())
    )
    session.add(JobAttempt(job_id=job_id, attempt=job.attempts, worker=actor, outcome="purged",
                           finished_at=datetime.now(UTC)))
    return job.queue


def forget_failed(redis: Redis, job_id: int, queue_name: str) -> None:
    """After a purge commits: drop the job from RQ's failed registry and Redis."""
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    queue.failed_job_registry.remove(str(job_id))
    redis.delete(RQJob.key_for(str(job_id)))


def live_schedulers(redis: Redis) -> int:
    """rq-scheduler processes whose registration has not expired or recorded a death."""
    alive = 0
    for key in redis.scan_iter(match="rq:scheduler_instance:*", count=100):
        if not redis.hexists(key, "death"):
            alive += 1
    return alive


def backlog_threshold(queue: str) -> float:
    """Oldest-waiting age (seconds) past which a queue counts as backed up: twice its timeout, 60 s at least."""
    return max(60.0, 2.0 * policy_for(queue).timeout)
