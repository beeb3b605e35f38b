"""The cron catalogue: every platform schedule, with a fixed id, synced into rq-scheduler.

Crontab expressions are in UTC. Ids use only `[A-Za-z0-9_-]` (RQ job ids). The reconciler and
the alert monitor are not here: the scheduler process runs them every few seconds itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ScheduleEntry:
    """One cron entry: a fixed id, a crontab expression (in `timezone`), the job kind it submits and its
    arguments; `organisation_id` owns its jobs (None: the platform's)."""

    id: str
    cron: str
    kind: str
    args: tuple[Any, ...] = field(default_factory=tuple)
    description: str = ""
    timezone: str = "UTC"
    organisation_id: int | None = None


SCHEDULES: tuple[ScheduleEntry, ...] = (
    ScheduleEntry("medication-reminders", "*/15 * * * *", "reminders.medication",
                  description="Doses due in the next 30 min and doses missed (every 15 min)"),
    ScheduleEntry("medication-digests", "*/15 * * * *", "reminders.medication_digest",
                  description="Each organisation's 00:00 and 06:00 local digest of the day's doses (checked every 15 min)"),
    ScheduleEntry("immunization-check", "10 0 * * *", "reminders.immunizations",
                  description="Immunization doses overdue against the requirements (daily)"),
    ScheduleEntry("appointment-reminders", "5 * * * *", "reminders.appointments",
                  description="Booked appointments in the next 24 h (hourly)"),
    ScheduleEntry("inventory-maintenance", "*/15 * * * *", "maintenance.inventory",
                  description="Lots below their reorder level or expiring soon (every 15 min)"),
    ScheduleEntry("prune-idempotency-keys", "17 3 * * *", "maintenance.prune_idempotency_keys",
                  description="Forget Idempotency-Key responses older than 72 h (daily)"),
    ScheduleEntry("prune-retention", "7 3 * * *", "maintenance.prune_retention",
                  description="Remove finished jobs, processed HL7 and webhook attempts past their retention (daily)"),
    ScheduleEntry("prune-reports", "37 3 * * *", "reports.prune",
                  description="Delete generated PDF reports past their retention (daily)"),
    ScheduleEntry("backup", "47 2 * * *", "maintenance.backup",
                  description="Back up the database and prune backups past their retention (daily)"),
    ScheduleEntry("restore-drill", "15 4 * * 0", "maintenance.restore_drill",
                  description="Restore the latest backup into a scratch database and check it (weekly)"),
    ScheduleEntry("audit-archive", "27 2 * * *", "maintenance.audit_archive",
                  description="Archive audit records past their retention to daily files, then remove them (daily)"),
    ScheduleEntry("audit-verify", "53 4 * * *", "maintenance.audit_verify",
                  description="Walk the audit log's hash chains; alert on a broken link (daily)"),
)
