"""Schedules: the catalogue synced into rq-scheduler idempotently; each tick submitted once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from rq_scheduler.utils import to_unix
from sqlalchemy import select

from app.models import Job
from app.runtime import Runtime
from schedules import sync
from schedules.catalogue import SCHEDULES, ScheduleEntry
from schedules.process import TriageScheduler, build_scheduler
from tests.conftest import Processes

EXTRA = ScheduleEntry("test-extra", "*/5 * * * *", "maintenance.ping", description="a test entry")


def entries(scheduler: TriageScheduler) -> list[str]:
    return sorted(job.id for job in scheduler.get_jobs())


def test_sync_is_idempotent_across_restarts(clean: Runtime, procs: Processes) -> None:
    scheduler = build_scheduler(clean)
    for _ in range(10):
        sync.sync(scheduler)
    for _ in range(3):  # and from fresh processes, as a restarted scheduler does
        procs.run("schedules", "sync")
    assert entries(scheduler) == sorted(e.id for e in SCHEDULES)
    assert clean.redis.zcard(scheduler.scheduled_jobs_key) == len(SCHEDULES)


def test_a_removed_entry_is_gone_and_a_changed_one_replaced(clean: Runtime) -> None:
    scheduler = build_scheduler(clean)
    assert sync.sync(scheduler, (*SCHEDULES, EXTRA)) == (len(SCHEDULES) + 1, 0)
    changed = ScheduleEntry(EXTRA.id, "*/10 * * * *", EXTRA.kind)
    assert sync.sync(scheduler, (*SCHEDULES, changed)) == (1, 0)
    [extra] = [job for job in scheduler.get_jobs() if job.id == EXTRA.id]
    assert extra.meta["cron_string"] == "*/10 * * * *"
    assert sync.sync(scheduler) == (0, 1)
    assert EXTRA.id not in entries(scheduler)
    assert not clean.redis.exists(f"rq:job:{EXTRA.id}")


def test_schedules_come_back_after_redis_lost_them(clean: Runtime) -> None:
    scheduler = build_scheduler(clean)
    sync.sync(scheduler)
    clean.redis.flushdb()
    assert entries(scheduler) == []
    sync.sync(scheduler)
    assert entries(scheduler) == sorted(e.id for e in SCHEDULES)


def test_a_due_tick_is_submitted_once_by_two_schedulers(clean: Runtime) -> None:
    first, second = build_scheduler(clean), build_scheduler(clean)
    sync.sync(first, (EXTRA,))
    due = datetime.now(UTC) - timedelta(seconds=30)
    clean.redis.zadd(first.scheduled_jobs_key, {EXTRA.id: to_unix(due)})
    barrier = threading.Barrier(2)

    def run(scheduler: TriageScheduler) -> None:
        [(job, when)] = list(scheduler.get_jobs_to_queue(with_times=True))
        barrier.wait()
        scheduler.tick(job, when)

    threads = [threading.Thread(target=run, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    with clean.sessions() as session:
        submitted = session.scalars(select(Job).where(Job.kind == "maintenance.ping")).all()
    assert len(submitted) == 1 and submitted[0].idempotency_key.startswith(f"schedule:{EXTRA.id}:")
    [(_, next_run)] = list(first.get_jobs(with_times=True))
    assert next_run > datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)


def test_operators_list_the_schedules(clean: Runtime, procs: Processes) -> None:
    procs.run("schedules", "sync")
    listed = procs.run("schedules", "list")
    assert all(entry.id in listed for entry in SCHEDULES) and "not synced" not in listed
