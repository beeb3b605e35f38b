"""`triage scheduler`: rq-scheduler's loop. While it holds rq-scheduler's lock, each interval it turns
due schedule entries into ledger jobs, runs the reconciler and the alert monitor, and re-syncs
the catalogue every minute (so schedules come back after Redis lost them)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

from redis.exceptions import RedisError
from rq_scheduler import Scheduler
from sqlalchemy.exc import SQLAlchemyError

from app.runtime import Runtime
from schedules import sync
from schedules.catalogue import SCHEDULES, ScheduleEntry
from workers.monitor import Monitor
from workers.reconciler import Reconciler, reconciler_for

log = logging.getLogger(__name__)
#: Seconds between catalogue syncs by the lock holder.
SYNC_EVERY = 60.0


class TriageScheduler(Scheduler):  # type: ignore[misc]
    """Due schedule ticks become ledger jobs; then a reconcile pass and a monitor pass."""

    def __init__(self, runtime: Runtime, reconciler: Reconciler, monitor: Monitor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        self.reconciler = reconciler
        self.monitor = monitor
        self._synced_at = 0.0

    def tick(self, job: Any, due: datetime) -> bool:
        """Submit one due entry's run (once, whoever else tries) and book its next run."""
        try:
            with self.runtime.sessions.begin() as session:
                submitted = sync.submit_tick(session, job.meta[sync.META], due)
        except SQLAlchemyError as exc:
            log.warning("Schedule %s: tick not submitted (%s); retrying next interval", job.id, type(exc).__name__)
            return False
        sync.book_next(self.connection, self, job)
        if submitted is not None:
            log.info("Schedule %s: job %s submitted", job.id, submitted.id)
        return submitted is not None

    def enqueue_jobs(self) -> list[Any]:
        """Due entries first (others the rq-scheduler way), then the reconciler and the monitor."""
        due = list(self.get_jobs_to_queue(with_times=True))
        for job, when in due:
            if sync.META in job.meta:
                self.tick(job, when)
            else:
                self.enqueue_job(job)
        self._housekeeping()
        return [job for job, _ in due]

    def _housekeeping(self) -> None:
        try:
            if time.monotonic() - self._synced_at >= SYNC_EVERY:
                sync.sync(self, all_entries(self.runtime))
                self._synced_at = time.monotonic()
            orphans, losses = self.reconciler.run_once()
            if orphans or losses:
                log.info("Reconciler: %s orphaned and %s lost jobs enqueued again", orphans, losses)
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("Reconciler: pass failed (%s); retrying next interval", type(exc).__name__)
        try:
            self.monitor.run_if_due()
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("Monitor: pass failed (%s); retrying next interval", type(exc).__name__)


def all_entries(runtime: Runtime) -> tuple[ScheduleEntry, ...]:
    """The platform's catalogue and every organisation's enabled report schedule."""
    from app.services import report_schedules

    with runtime.sessions.begin() as session:
        return SCHEDULES + report_schedules.entries(session)


def build_scheduler(runtime: Runtime) -> TriageScheduler:
    """The scheduler on the runtime's Redis, checking every reconcile interval."""
    return TriageScheduler(runtime, reconciler_for(runtime), Monitor(runtime), connection=runtime.redis,
                           interval=max(1, round(runtime.settings.reconcile_interval)))


def run_scheduler(runtime: Runtime, *, burst: bool = False) -> None:
    """Sync the catalogue, then run the loop until SIGTERM (two may run; rq-scheduler's lock elects one)."""
    scheduler = build_scheduler(runtime)
    sync.sync(scheduler, all_entries(runtime))
    scheduler.run(burst=burst)
