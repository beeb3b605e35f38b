"""Scheduled reports defined by organisations: validated cron and time zone, synced as schedule entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crontab import CronTab
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import ReportSchedule, WebhookEndpoint
from schedules.catalogue import ScheduleEntry

RUN_KIND = "reports.scheduled"


class InvalidScheduleError(ValueError):
    """A field that cannot be accepted; `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


class ScheduleNotFoundError(LookupError):
    """No such schedule in this organisation."""


def check_cron(expression: str) -> None:
    """A five-field crontab expression (minute hour day month weekday), or InvalidScheduleError."""
    if len(expression.split()) != 5:
        raise InvalidScheduleError("cron", "give five fields: minute hour day-of-month month day-of-week")
    try:
        fires = CronTab(expression).next(default_utc=True)
    except ValueError as exc:
        raise InvalidScheduleError("cron", f"not a valid crontab expression: {exc}") from None
    if fires is None:
        raise InvalidScheduleError("cron", "this crontab expression never fires")


def check_timezone(name: str) -> None:
    """An IANA time zone name, or InvalidScheduleError."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidScheduleError("timezone", f"unknown time zone {name!r}") from None


def _check(session: Session, values: dict[str, Any], organisation_id: int) -> None:
    if "cron" in values:
        check_cron(values["cron"])
    if "timezone" in values:
        check_timezone(values["timezone"])
    endpoint_id = values.get("endpoint_id")
    if endpoint_id is not None:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.organisation_id != organisation_id or endpoint.deleted_at is not None:
            raise InvalidScheduleError("endpoint_id", "no such webhook endpoint in this organisation")


def create(session: Session, values: dict[str, Any], *, organisation_id: int) -> ReportSchedule:
    """A new schedule (the scheduler picks it up at its next sync)."""
    _check(session, values, organisation_id)
    schedule = ReportSchedule(organisation_id=organisation_id, **values)
    session.add(schedule)
    session.flush()
    return schedule


def get(session: Session, schedule_id: int, *, organisation_id: int) -> ReportSchedule:
    """One schedule of the organisation."""
    schedule = session.get(ReportSchedule, schedule_id)
    if schedule is None or schedule.organisation_id != organisation_id:
        raise ScheduleNotFoundError(f"report schedule {schedule_id} not found")
    return schedule


def update(session: Session, schedule_id: int, values: dict[str, Any], *, organisation_id: int) -> ReportSchedule:
    """Change fields of a schedule."""
    _check(session, values, organisation_id)
    schedule = get(session, schedule_id, organisation_id=organisation_id)
    for name, value in values.items():
        setattr(schedule, name, value)
    schedule.updated_at = func.now()
    session.flush()
    return schedule


def delete(session: Session, schedule_id: int, *, organisation_id: int) -> None:
    """Remove a schedule (gone from rq-scheduler at the next sync)."""
    session.delete(get(session, schedule_id, organisation_id=organisation_id))
    session.flush()


def listed(session: Session, *, organisation_id: int) -> list[ReportSchedule]:
    """The organisation's schedules."""
    return list(session.scalars(select(ReportSchedule).where(ReportSchedule.organisation_id == organisation_id)
                                .order_by(ReportSchedule.id)))


def entries(session: Session) -> tuple[ScheduleEntry, ...]:
    """Every enabled schedule as a schedule entry (fixed id per schedule)."""
    rows = session.scalars(select(ReportSchedule).where(ReportSchedule.enabled.is_(True)).order_by(ReportSchedule.id))
    return tuple(ScheduleEntry(f"report-schedule-{s.id}", s.cron, RUN_KIND, (s.id,), s.description or s.report_type,
                               s.timezone, s.organisation_id) for s in rows)


def next_run(schedule: ReportSchedule, now: datetime | None = None) -> datetime:
    """When the schedule fires next (UTC)."""
    from schedules.sync import next_run as after

    return after(schedule.cron, schedule.timezone, now)
