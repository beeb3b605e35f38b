"""The transactional outbox: ledger rows reach RQ only after their transaction commits."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from jobs.spec import spec_for
from workers.metrics import record_submitted

log = logging.getLogger(__name__)

_OUTBOX = "triage.outbox"
#: RQ keeps a finished job's hash this long; the ledger is the lasting record.
RESULT_TTL = 60


@dataclass(frozen=True)
class Outgoing:
    """A ledger job to hand to RQ: its id, kind, queue and JSON arguments."""

    job_id: int
    kind: str
    queue: str
    arguments: Sequence[Any]
    from_dead: bool = False  # a requeued dead letter: leaves RQ's failed registry too


def stage(session: Session, outgoing: Outgoing) -> None:
    """Hold a job in the session until its outermost transaction commits (dropped on rollback).

    Each job remembers the (nested) transaction that staged it, so rolling back a savepoint drops
    only the jobs staged inside it, and releasing one pushes nothing yet.
    """
    owner = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_OUTBOX, []).append((owner, outgoing))


def _inside(owner: SessionTransaction | None, ended: SessionTransaction) -> bool:
    while owner is not None:
        if owner is ended:
            return True
        owner = owner.parent
    return False


def push(redis: Redis, jobs: Iterable[Outgoing], *, failure_ttl: int, at_front: bool = False,
         queues: dict[str, Queue] | None = None) -> None:
    """Put ledger jobs on their RQ queues in one pipeline per queue; job id = ledger id.

    `queues`: RQ queues on this client built by earlier calls, kept by the caller (building one
    checks its serializer against a runtime Protocol, which costs more than the rest of a push).
    """
    by_queue: dict[str, list[Outgoing]] = defaultdict(list)
    for job in jobs:
        by_queue[job.queue].append(job)
    built = {} if queues is None else queues
    for name, batch in by_queue.items():
        queue = built.get(name)
        if queue is None:
            queue = built[name] = Queue(name, connection=redis, serializer=JSONSerializer)
        data = [
            Queue.prepare_data(
                spec_for(job.kind).func,
                args=list(job.arguments),
                job_id=str(job.job_id),
                timeout=spec_for(job.kind).timeout,
                result_ttl=RESULT_TTL,
                failure_ttl=failure_ttl,
                description=f"{job.kind} #{job.job_id}",
                at_front=at_front,
            )
            for job in batch
        ]
        with redis.pipeline() as pipeline:
            queue.enqueue_many(data, pipeline=pipeline)
            revived = [str(job.job_id) for job in batch if job.from_dead]
            if revived:
                pipeline.zrem(queue.failed_job_registry.key, *revived)
            pipeline.execute()


def _mark_pending(engine: Engine, ids: list[int]) -> None:
    """Record that committed jobs have not reached Redis yet (the reconciler will push them)."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE jobs SET status = 'pending', updated_at = now() WHERE id = ANY(:ids) AND status = 'queued'"),
            {"ids": ids},
        )


def install_outbox(sessions: sessionmaker, redis: Redis, engine: Engine, *, failure_ttl: int) -> None:  # type: ignore[type-arg]
    """Make sessions from this factory enqueue their staged jobs after commit."""
    queues: dict[str, Queue] = {}

    @event.listens_for(sessions, "after_commit")
    def _after_commit(session: Session) -> None:
        if session.in_nested_transaction():  # a savepoint released: its jobs wait for the real commit
            return
        staged: list[Outgoing] = [job for _, job in session.info.pop(_OUTBOX, [])]
        if not staged:
            return
        for job in staged:
            if not job.from_dead:  # a requeued dead letter is not a new submission
                record_submitted(job.queue, job.kind)
        try:
            push(redis, staged, failure_ttl=failure_ttl, queues=queues)
        except RedisError:
            # The work is committed: the reconciler will enqueue it once Redis is back.
            ids = [job.job_id for job in staged]
            log.warning("Jobs %s: committed but Redis is unavailable; left to the reconciler", ids)
            try:
                _mark_pending(engine, ids)
            except SQLAlchemyError:
                log.warning("Jobs %s: could not be marked pending either", ids)

    @event.listens_for(sessions, "after_soft_rollback")
    def _after_rollback(session: Session, ended: SessionTransaction) -> None:
        if ended.parent is None:
            session.info.pop(_OUTBOX, None)
            return
        kept = [(owner, job) for owner, job in session.info.get(_OUTBOX, []) if not _inside(owner, ended)]
        session.info[_OUTBOX] = kept


def withdraw(redis: Redis, job_id: int, queue_name: str) -> None:
    """Best effort: take a cancelled job's copy out of Redis (workers skip it anyway)."""
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    try:
        with redis.pipeline() as pipeline:
            pipeline.lrem(queue.key, 0, str(job_id))
            pipeline.zrem(queue.scheduled_job_registry.key, str(job_id))
            pipeline.delete(f"{Job.redis_job_namespace_prefix}{job_id}")
            pipeline.execute()
    except RedisError:
        log.warning("Job %s: cancelled, but its Redis copy could not be removed now", job_id)
