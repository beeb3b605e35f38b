"""The Triage worker: RQ's SimpleWorker plus the ledger, classified retries, drain and a lease.

Differences from RQ, each small and named:
- `execute_job` claims the job in the ledger first; a job that is not waiting there is skipped.
- `handle_job_success` / `handle_job_failure` record the attempt in the ledger; a failure is
  classified (workers.policy) and turned into RQ's own retry (scheduled registry) or failure
  (failed registry = dead letters) by setting `retries_left` before RQ decides.
- SIGTERM drains: the job in hand gets `drain_seconds`, then is interrupted and put back at the
  front of its queue without spending an attempt; a second signal interrupts it at once.
- A lease thread keeps `triage:alive:<name>` fresh; the reconciler recovers jobs of a worker
  whose lease lapsed (SIGKILL, power loss) within seconds instead of RQ's minutes.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from types import FrameType, TracebackType
from typing import Any

from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from app.models import JobStatus
from app.outbox import RESULT_TTL
from app.runtime import Runtime
from app.services.operations import paused_queues
from jobs.spec import spec_for
from workers import metrics
from workers.deadline import CLOCK, DeadlinePenalty
from workers.lease import Lease
from workers.ledger import SUCCEEDED, Claim, Ledger
from workers.orphans import signal_when_orphaned
from workers.policy import decide

log = logging.getLogger(__name__)

#: Longest a worker blocks on its queues before re-reading which are paused.
_POLL_SECONDS = 5

#: Exit code asking the supervisor for a fresh process (max jobs or memory reached).
RECYCLE_EXIT = 75

#: Seconds between worker heartbeats (RQ sends ~3 per job; its key lives worker_ttl + 60 = 90 s).
HEARTBEAT_EVERY = 5.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class TriageWorker(SimpleWorker):
    """An RQ SimpleWorker (no fork per job) bound to the ledger."""

    death_penalty_class = DeadlinePenalty

    def __init__(self, queues: list[str], *, runtime: Runtime, max_jobs: int = 0, **kwargs: Any) -> None:
        rq_queues = [Queue(name, connection=runtime.redis, serializer=JSONSerializer) for name in queues]
        super().__init__(
            rq_queues,
            connection=runtime.redis,
            serializer=JSONSerializer,
            default_result_ttl=RESULT_TTL,
            worker_ttl=30,
            **kwargs,
        )
        settings = runtime.settings
        self.runtime = runtime
        self.ledger = Ledger.dedicated(runtime.engine.url)
        self.lease = Lease(
            runtime.redis,
            self.name,
            lease_seconds=settings.lease_seconds,
            hard_kill_grace=settings.hard_kill_grace,
        )
        self.recycle = False
        self._paused_names: set[str] = set()
        self._paused_at = -math.inf
        self._rss_at = -math.inf
        self.max_jobs = max_jobs
        self.jobs_done = 0
        self._claim: Claim | None = None
        self._holding = False  # a job is out of its queue and in this process's hands
        self._started = 0.0
        self._failure: BaseException | None = None
        self._rng = random.Random()

    # -- lifecycle ---------------------------------------------------------------------------

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """Hold the lease for as long as the work loop runs."""
        # RQ forks its scheduler from here; it must stop if this process is killed or recycled.
        os.register_at_fork(after_in_child=signal_when_orphaned)
        self.lease.renew()
        self.lease.start()
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            self.lease.release()
            self.ledger.close()

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: stop taking jobs; the job in hand has drain_seconds to finish."""
        log.info("Worker %s: draining (deadline %ss)", self.name, self.runtime.settings.drain_seconds)
        CLOCK.drain(self.runtime.settings.drain_seconds)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """Second signal: interrupt the job in hand now (it is put back, not failed)."""
        log.warning("Worker %s: second stop signal; interrupting the job in hand", self.name)
        self._stop_requested = True
        CLOCK.drain(0)

    def _shutdown(self) -> None:
        if self._holding or self._stop_requested:
            self._stop_requested = True  # busy, or already stopping (e.g. recycling): finish quietly
        else:
            super()._shutdown()  # type: ignore[no-untyped-call]

    # -- one job -----------------------------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Claim the job in the ledger, run it, and recycle the process if it grew too big."""
        try:
            self._execute(job, queue)
        finally:
            self._holding = False

    def _execute(self, job: Job, queue: Queue) -> None:
        if not job.id.isdigit():
            log.warning("Job %s: not a ledger job; run without a ledger record", job.id)
            super().execute_job(job, queue)
            return
        claim = self.ledger.claim(int(job.id), self.name)
        if claim is None:
            self._skip(job, queue)
            return
        self._claim = claim
        self._started = metrics.record_started(queue.name, claim.kind)
        self.lease.job_started(job.id, float(job.timeout or spec_for(claim.kind).timeout))
        try:
            super().execute_job(job, queue)
        finally:
            self._claim = None
            self._failure = None
            self.lease.job_finished()
        self._check_recycle()

    def _skip(self, job: Job, queue: Queue) -> None:
        """A copy of a job that is done, cancelled or running elsewhere: drop this copy."""
        log.info("Job %s: not waiting in the ledger; duplicate copy skipped", job.id)
        if len(self._ordered_queues) == 1:
            self.connection.lrem(queue.intermediate_queue_key, 1, job.id)

    # -- paused queues -----------------------------------------------------------------------

    def _paused(self) -> set[str]:
        """The paused queue names, re-read from Redis at most once a second."""
        now = time.monotonic()
        if now - self._paused_at > 1.0:
            self._paused_names = paused_queues(self.connection)
            self._paused_at = now
        return self._paused_names

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """Dequeue from the queues that are not paused, polling so pauses take effect in seconds."""
        while True:
            paused = self._paused()
            self._ordered_queues = [q for q in self.queues if q.name not in paused]
            if not self._ordered_queues:
                if timeout is None:
                    return None
                self.heartbeat()
                time.sleep(1)
                continue
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time or _POLL_SECONDS)
            if result is None:
                if timeout is None or max_idle_time is not None:
                    return None
                continue
            job, queue = result
            self._holding = True
            # The set is at most a second old (older after a blocking wait, then re-read).
            if queue.name not in self._paused():
                return result
            # Paused while we were waiting on it: back to the front, untouched.
            if len(self._ordered_queues) == 1:
                self.connection.lrem(queue.intermediate_queue_key, 1, job.id)
            queue.push_job_id(job.id, at_front=True)
            self._holding = False

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """RQ pops through its intermediate queue when listening on one queue: pauses can make it one."""
        super().prepare_job_execution(job, remove_from_intermediate_queue or len(self._ordered_queues) == 1)

    def _over_memory(self, limit: int) -> bool:
        self._rss_at = time.monotonic()
        return _rss_mb() > limit

    def _check_recycle(self) -> None:
        self.jobs_done += 1
        limit = self.runtime.settings.worker_max_memory_mb
        if limit and time.monotonic() - self._rss_at >= 1.0 and self._over_memory(limit):
            log.warning("Worker %s: RSS over %s MiB; exiting to be replaced", self.name, limit)
        elif not (self.max_jobs and self.jobs_done >= self.max_jobs):
            return
        self.recycle = True
        self._stop_requested = True

    # -- RQ's per-job bookkeeping, in fewer round trips --------------------------------------

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """Refresh the worker key at most every HEARTBEAT_EVERY s, in one round trip, unless RQ
        sets a TTL (before a job) or passes a pipeline: RQ 3.0 sends 3 commands, ~3 times a job."""
        if pipeline is not None or timeout is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        if self.last_heartbeat is not None and (now() - self.last_heartbeat).total_seconds() < HEARTBEAT_EVERY:
            return
        with self.connection.pipeline() as pipe:
            super().heartbeat(pipeline=pipe)
            pipe.execute()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """Don't write the state the worker key already holds (RQ writes `idle` twice a job)."""
        if pipeline is None and state == self.get_state():
            return
        super().set_state(state, pipeline)

    def cleanup_execution(self, job: Job, pipeline: Any, execution: Execution | None = None) -> None:
        """Also mark the worker idle, in the job's last pipeline instead of a round trip of its own."""
        super().cleanup_execution(job, pipeline=pipeline, execution=execution)
        super().set_state(WorkerStatus.IDLE, pipeline=pipeline)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """Stamp the job's end; RQ's job heartbeat here only matters while callbacks run."""
        job.ended_at = now()
        if job.success_callback or job.failure_callback:
            job.heartbeat(now(), heartbeat_ttl)

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """Ledger first: once it says succeeded, the job never runs again."""
        if self._claim is not None:
            self.ledger.finish(self._claim.job_id, self.name, SUCCEEDED)
            metrics.record_finished(queue.name, self._claim.kind, SUCCEEDED.outcome, metrics.elapsed(self._started))
        super().handle_job_success(job, queue, started_job_registry, execution)

    def handle_exception(
        self,
        job: Job,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Keep the exception for classification; log its type only (messages may hold PHI)."""
        self._failure = exc_value
        log.warning("Job %s: attempt failed with %s", job.id, exc_type.__name__ if exc_type else "?")
        call_exception_handlers(self._exc_handlers, job, exc_type, exc_value, tb)

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        """Classify the failure, record it, then let RQ retry (scheduled) or fail (dead letters)."""
        claim, exc = self._claim, self._failure
        if claim is None or exc is None:
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
            return
        outcome, delay = decide(exc, claim, spec_for(claim.kind), self._rng)
        metrics.record_finished(queue.name, claim.kind, outcome.outcome, metrics.elapsed(self._started))
        if not self.ledger.finish(claim.job_id, self.name, outcome):
            log.warning("Job %s: recovered by the reconciler meanwhile; leaving it to the new attempt", job.id)
            with self.connection.pipeline() as pipeline:
                self.cleanup_execution(job, pipeline=pipeline, execution=execution)
                pipeline.execute()
            return
        if outcome.outcome == "interrupted":
            self._put_back(job, queue, execution)
            return
        if outcome.status is JobStatus.RETRYING:
            job.retries_left, job.retry_intervals = 1, [math.ceil(delay)]
        else:
            job.retries_left = 0
        super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        if outcome.status is JobStatus.DEAD:
            log.error("Job %s (%s): dead-lettered after %s attempt(s): %s",
                      job.id, claim.kind, claim.attempt, outcome.error_type)
        else:
            log.info("Job %s: %s, next run in %.1fs", job.id, outcome.outcome, delay)

    def _put_back(self, job: Job, queue: Queue, execution: Execution | None) -> None:
        """Return an interrupted job to the front of its queue, as if never started."""
        with self.connection.pipeline() as pipeline:
            self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.execute()
        queue.enqueue_job(job, at_front=True)
        log.info("Job %s: interrupted by drain; back at the front of %s", job.id, queue.name)


def run_worker(runtime: Runtime, queues: list[str], *, burst: bool = False, max_jobs: int = 0) -> int:
    """Run one worker process until drained; return its exit code (75: please restart me)."""
    worker = TriageWorker(queues, runtime=runtime.use(), max_jobs=max_jobs)
    worker.work(burst=burst, with_scheduler=True, logging_level=runtime.settings.log_level)
    return RECYCLE_EXIT if worker.recycle else 0
