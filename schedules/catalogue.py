"""The cron catalogue: every scheduled job, with a fixed id (filled in by the schedules issue)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleEntry:
    """One cron entry: a fixed id, a crontab expression (UTC) and the job kind it submits."""

    id: str
    cron: str
    kind: str


SCHEDULES: tuple[ScheduleEntry, ...] = ()
