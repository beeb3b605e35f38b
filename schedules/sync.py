"""Syncing the declared schedules into rq-scheduler, idempotently, and turning due ticks into ledger jobs.

Sync: every declared entry has exactly one rq-scheduler job under its fixed id (created, or
replaced when its cron, kind or arguments changed); any scheduler job of ours no longer declared
is removed. Run at scheduler start and every minute, so a Redis that lost its data gets them back.

Ticks: when an entry is due, the scheduler writes a ledger job (enqueued after commit like any
other) whose Idempotency-Key names the entry and the due minute, so two schedulers — or a
restart mid-tick — never submit one tick twice; then it books the entry's next run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from crontab import CronTab
from redis import Redis
from rq.job import Job as RqJob
from rq_scheduler import Scheduler
from rq_scheduler.utils import to_unix
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Job
from app.services import jobs
from app.services.organisations import ensure_organisation
from jobs.spec import spec_for
from schedules.catalogue import SCHEDULES, ScheduleEntry

log = logging.getLogger(__name__)
#: Marks rq-scheduler jobs that are Triage schedule entries (and holds the entry's definition).
META = "triage_schedule"
#: The ledger organisation of platform schedules' jobs.
PLATFORM_ORGANISATION = "triage-platform"


def _definition(entry: ScheduleEntry) -> dict[str, object]:
    return {"id": entry.id, "cron": entry.cron, "kind": entry.kind, "args": list(entry.args),
            "timezone": entry.timezone, "organisation_id": entry.organisation_id}


def next_run(cron: str, timezone: str, now: datetime | None = None) -> datetime:
    """The next time a crontab expression fires, read in its time zone (as a UTC instant).

    In the hour repeated when clocks go back, a wall-clock time may name an instant already past:
    then its second occurrence (fold=1) or a later match is taken, never a time in the past.
    """
    now = now or datetime.now(UTC)
    probe = now.astimezone(ZoneInfo(timezone))
    for _ in range(1000):
        fires: datetime | None = CronTab(cron).next(now=probe, return_datetime=True)
        if fires is None:
            raise ValueError(f"the crontab expression {cron!r} never fires")
        for candidate in (fires, fires.replace(fold=1)):
            if candidate.astimezone(UTC) > now:
                return candidate.astimezone(UTC)
        probe = fires + timedelta(minutes=1)
    raise ValueError(f"no future run found for {cron!r}")


def _ours(scheduler: Scheduler) -> dict[str, RqJob]:
    return {job.id: job for job in scheduler.get_jobs() if META in job.meta}


def sync(scheduler: Scheduler, entries: tuple[ScheduleEntry, ...] = SCHEDULES) -> tuple[int, int]:
    """Make rq-scheduler hold exactly the declared entries; (added or replaced, removed)."""
    existing, wanted = _ours(scheduler), {e.id: e for e in entries}
    changed = removed = 0
    for entry_id, job in existing.items():
        if entry_id not in wanted or job.meta[META] != _definition(wanted[entry_id]):
            scheduler.cancel(job)
            job.delete()
            removed += entry_id not in wanted
    for entry in entries:
        if entry.id in existing and existing[entry.id].meta[META] == _definition(entry):
            continue
        spec = spec_for(entry.kind)
        job = scheduler.cron(entry.cron, func=spec.func, args=list(entry.args), id=entry.id, queue_name=spec.queue,
                             result_ttl=0, description=entry.description or entry.kind,
                             meta={META: _definition(entry)})
        book_next(scheduler.connection, scheduler, job)  # in the entry's own time zone
        changed += 1
    if changed or removed:
        log.info("Schedules: %s added or replaced, %s removed", changed, removed)
    return changed, removed


def tick_key(entry_id: str, due: datetime) -> str:
    """The Idempotency-Key of one run of an entry (per due minute)."""
    return f"schedule:{entry_id}:{due.strftime('%Y%m%dT%H%M')}"


def submit_tick(session: Session, definition: dict[str, object], due: datetime) -> Job | None:
    """The ledger job of a due tick; None when this tick was submitted already."""
    owner = definition.get("organisation_id")
    organisation_id = owner if isinstance(owner, int) else ensure_organisation(session, PLATFORM_ORGANISATION).id
    key = tick_key(str(definition["id"]), due)
    try:
        with session.begin_nested():
            args = definition["args"]
            return jobs.submit(session, str(definition["kind"]), *(args if isinstance(args, list) else []),
                               organisation_id=organisation_id, idempotency_key=key)
    except IntegrityError:
        return None


def book_next(redis: Redis, scheduler: Scheduler, job: RqJob) -> None:
    """Put a cron entry back into rq-scheduler at its next run time (in its time zone)."""
    timezone = str(job.meta.get(META, {}).get("timezone") or "UTC")
    next_time = next_run(job.meta["cron_string"], timezone).replace(tzinfo=None)  # rq-scheduler: naive UTC
    redis.zadd(scheduler.scheduled_jobs_key, {job.id: to_unix(next_time)})


@dataclass(frozen=True)
class ScheduleView:
    """A schedule as operators see it."""

    id: str
    cron: str
    kind: str
    description: str
    next_run_at: datetime | None
    last_status: str | None
    last_run_at: datetime | None


def views(session: Session, scheduler: Scheduler, entries: tuple[ScheduleEntry, ...] = SCHEDULES) -> list[ScheduleView]:
    """Every schedule with its next run (from Redis) and its last run's outcome (ledger)."""
    times = {job.id: when for job, when in scheduler.get_jobs(with_times=True)}
    found = []
    for entry in entries:
        last = session.scalars(select(Job).where(Job.idempotency_key.like(f"schedule:{entry.id}:%"))
                               .order_by(Job.id.desc()).limit(1)).first()
        found.append(ScheduleView(entry.id, entry.cron, entry.kind, entry.description, times.get(entry.id),
                                  last.status if last else None, last.created_at if last else None))
    return found
