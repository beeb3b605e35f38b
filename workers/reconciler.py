"""The reconciler: makes Redis hold what the ledger says is waiting, and recovers crashed jobs.

Two sweeps, both safe to run from several processes at once (a worker's claim in the ledger
is what guarantees one execution per attempt):
- orphans: jobs `running` in the ledger whose worker's lease has lapsed (SIGKILL, lost host)
  are put back at the front of their queue (that attempt counted) or dead-lettered;
- losses: jobs waiting in the ledger for longer than a grace period that Redis no longer holds
  (a Redis restart, a failed enqueue, a job popped by a worker that died before starting it)
  are enqueued again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from rq import Queue
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.serializers import JSONSerializer
from sqlalchemy import Engine, text

from app.models import JobStatus
from app.outbox import Outgoing, push
from jobs.spec import is_declared, spec_for
from workers.lease import lease_key
from workers.ledger import Ledger, Outcome

log = logging.getLogger(__name__)

_RUNNING = text("SELECT id, worker, kind, queue, arguments, attempts, max_attempts FROM jobs WHERE status = 'running'")
_WAITING = text(
    """
    SELECT id, kind, queue, arguments, status FROM jobs
    WHERE status IN ('pending', 'queued', 'retrying') AND id > :after
      AND updated_at < now() - make_interval(secs => :grace)
      AND (next_attempt_at IS NULL OR next_attempt_at < now() - make_interval(secs => :grace))
    ORDER BY id LIMIT :limit
    """
)
_UNKNOWN_KIND = text(
    """
    UPDATE jobs SET status = 'dead', finished_at = now(), updated_at = now(),
        last_error_type = 'UnknownJobKindError', last_error_message = 'no job module declares kind ' || kind
    WHERE id = ANY(:ids) AND status IN ('pending', 'queued', 'retrying', 'running')
    """
)
#: Queues longer than this are not searched for a single lost id (LPOS is linear).
_LPOS_LIMIT = 20_000


@dataclass
class Reconciler:
    """One per process that reconciles; remembers since when each worker's lease was missing."""

    engine: Engine
    redis: Redis
    lease_seconds: float
    grace: float
    failure_ttl: int
    batch: int = 1000
    _missing_since: dict[str, float] = field(default_factory=dict)
    _after_id: int = 0  # the loss sweep pages through the waiting jobs, a batch per pass

    def run_once(self) -> tuple[int, int]:
        """One pass of both sweeps; returns (orphans recovered, losses re-enqueued)."""
        return self.recover_orphans(), self.restore_losses()

    # -- orphans -----------------------------------------------------------------------------

    def _dead_workers(self, workers: set[str]) -> set[str]:
        """Workers whose lease has been missing for longer than a renewal period, twice seen."""
        names = sorted(workers)
        alive = self.redis.mget([lease_key(n) for n in names]) if names else []
        now = time.monotonic()
        missing = {n for n, a in zip(names, alive) if a is None}
        for name in list(self._missing_since):
            if name not in missing:
                del self._missing_since[name]
        confirm_after = self.lease_seconds / 2
        return {n for n in missing if now - self._missing_since.setdefault(n, now) >= confirm_after}

    def recover_orphans(self) -> int:
        """Put back the jobs of workers that died holding them."""
        with self.engine.connect() as conn:
            rows = self._known(conn.execute(_RUNNING).all())
        dead = self._dead_workers({r.worker for r in rows if r.worker})
        ledger = Ledger(self.engine)
        recovered = 0
        for row in (r for r in rows if r.worker in dead):
            final = row.attempts >= row.max_attempts
            outcome = Outcome(
                "crashed",
                JobStatus.DEAD if final else JobStatus.QUEUED,
                error_type="WorkerLost",
                error_message=f"worker {row.worker} stopped renewing its lease during attempt {row.attempts}",
            )
            if not ledger.finish(row.id, row.worker, outcome):
                continue
            outgoing = Outgoing(row.id, row.kind, row.queue, row.arguments)
            self._forget_execution(outgoing)
            if final:
                self._bury(outgoing, outcome)
            else:
                push(self.redis, [outgoing], failure_ttl=self.failure_ttl, at_front=True)
            log.warning("Job %s: worker %s lost it; %s", row.id, row.worker, "dead" if final else "requeued")
            recovered += 1
        return recovered

    def _forget_execution(self, job: Outgoing) -> None:
        queue = Queue(job.queue, connection=self.redis, serializer=JSONSerializer)
        registry = queue.started_job_registry
        members: list[bytes] = self.redis.zrange(registry.key, 0, -1)  # type: ignore[assignment]
        entries = [e for e in members if e.decode().split(":")[0] == str(job.job_id)]
        if entries:
            self.redis.zrem(registry.key, *entries)

    def _bury(self, job: Outgoing, outcome: Outcome) -> None:
        """Put a job whose last attempt crashed in RQ's failed registry (the dead letters).

        Never via its queue: a worker listening there could take it first.
        """
        queue = Queue(job.queue, connection=self.redis, serializer=JSONSerializer)
        spec = spec_for(job.kind)
        rq_job = RQJob.create(
            spec.func,
            args=list(job.arguments),
            id=str(job.job_id),
            origin=job.queue,
            connection=self.redis,
            serializer=JSONSerializer,
            timeout=spec.timeout,
            failure_ttl=self.failure_ttl,
            description=f"{job.kind} #{job.job_id}",
        )
        with self.redis.pipeline() as pipeline:
            rq_job.save(pipeline=pipeline)
            rq_job.set_status(RQStatus.FAILED, pipeline=pipeline)
            queue.failed_job_registry.add(
                rq_job, ttl=self.failure_ttl, exc_string=outcome.error_message or "", pipeline=pipeline
            )
            pipeline.execute()
        log.error("Job %s (%s): dead-lettered: %s", job.job_id, job.kind, outcome.error_type)

    # -- losses ------------------------------------------------------------------------------

    def restore_losses(self) -> int:
        """Enqueue again the waiting jobs that Redis does not hold (one batch, continuing next pass)."""
        with self.engine.connect() as conn:
            params = {"grace": self.grace, "limit": self.batch, "after": self._after_id}
            rows = self._known(conn.execute(_WAITING, params).all())
        self._after_id = rows[-1].id if len(rows) == self.batch else 0
        if not rows:
            return 0
        with self.redis.pipeline(transaction=False) as pipeline:
            for row in rows:
                pipeline.hget(f"{RQJob.redis_job_namespace_prefix}{row.id}", "status")
            statuses = pipeline.execute()
        lost = [row for row, status in zip(rows, statuses) if not self._held(row, status)]
        for row in lost:
            self._forget_execution(Outgoing(row.id, row.kind, row.queue, row.arguments))
        if lost:
            push(self.redis, [Outgoing(r.id, r.kind, r.queue, r.arguments) for r in lost], failure_ttl=self.failure_ttl)
            with self.engine.begin() as conn:
                conn.execute(
                    text("UPDATE jobs SET status = 'queued', updated_at = now() WHERE id = ANY(:ids) AND status = 'pending'"),
                    {"ids": [r.id for r in lost]},
                )
            log.warning("Jobs %s: missing from Redis; enqueued again", [r.id for r in lost])
        return len(lost)

    def _held(self, row: Any, status: bytes | None) -> bool:
        """Whether Redis still holds this waiting job where a worker will find it."""
        if status is None:
            return False
        queue = Queue(row.queue, connection=self.redis, serializer=JSONSerializer)
        state = status.decode()
        if state == RQStatus.SCHEDULED.value:
            return self.redis.zscore(queue.scheduled_job_registry.key, str(row.id)) is not None
        if state == RQStatus.QUEUED.value:
            if self.redis.llen(queue.key) > _LPOS_LIMIT:
                return True
            return self.redis.lpos(queue.key, str(row.id)) is not None
        # Started, finished or failed in Redis while the ledger still waits: a Redis step was lost
        # after the ledger moved on. Enqueue it again; the claim makes sure it runs once.
        return False

    def _known(self, rows: Sequence[Any]) -> list[Any]:
        """Rows whose kind some job module declares; the others are dead-lettered in the ledger."""
        unknown = [row.id for row in rows if not is_declared(row.kind)]
        if unknown:
            with self.engine.begin() as conn:
                conn.execute(_UNKNOWN_KIND, {"ids": unknown})
            log.error("Jobs %s: kind no longer declared (TRIAGE_JOB_MODULES?); dead-lettered", unknown)
        return [row for row in rows if row.id not in unknown]


def reconciler_for(runtime: Any) -> Reconciler:
    """A reconciler with the runtime's connections and settings."""
    settings = runtime.settings
    return Reconciler(
        engine=runtime.engine,
        redis=runtime.redis,
        lease_seconds=settings.lease_seconds,
        grace=settings.reconcile_grace,
        failure_ttl=settings.failure_ttl,
    )
