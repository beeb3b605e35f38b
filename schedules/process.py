"""`triage scheduler`: rq-scheduler's loop, which also runs the reconciler and the alert monitor
while it holds the lock."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from rq_scheduler import Scheduler
from sqlalchemy.exc import SQLAlchemyError

from app.runtime import Runtime
from workers.monitor import Monitor
from workers.reconciler import Reconciler, reconciler_for

log = logging.getLogger(__name__)


class TriageScheduler(Scheduler):  # type: ignore[misc]
    """Enqueues due cron jobs, then reconciles the ledger with Redis, every interval."""

    def __init__(self, reconciler: Reconciler, monitor: Monitor, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.reconciler = reconciler
        self.monitor = monitor

    def enqueue_jobs(self) -> list[object]:
        """Due cron jobs first, then one reconcile pass (only the lock holder gets here)."""
        jobs: list[object] = super().enqueue_jobs()
        try:
            orphans, losses = self.reconciler.run_once()
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("Reconciler: pass failed (%s); retrying next interval", type(exc).__name__)
        else:
            if orphans or losses:
                log.info("Reconciler: %s orphaned and %s lost jobs enqueued again", orphans, losses)
        try:
            self.monitor.run_if_due()
        except (RedisError, SQLAlchemyError) as exc:
            log.warning("Monitor: pass failed (%s); retrying next interval", type(exc).__name__)
        return jobs


def run_scheduler(runtime: Runtime, *, burst: bool = False) -> None:
    """Run the scheduler loop until SIGTERM (two may run; rq-scheduler's lock elects one)."""
    scheduler = TriageScheduler(
        reconciler_for(runtime),
        Monitor(runtime),
        connection=runtime.redis,
        interval=max(1, round(runtime.settings.reconcile_interval)),
    )
    scheduler.run(burst=burst)
