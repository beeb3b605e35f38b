"""Backup job kinds: the daily backup (then pruning) and the weekly restore drill.

A dead letter on the maintenance queue does not page anyone by itself, so both jobs also open a
critical platform alert when they fail for good (and resolve it on their next success).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from app.runtime import current
from app.services import alerts, audit, backups
from jobs.attempts import attempt_number
from jobs.errors import PermanentError
from jobs.spec import job_kind

log = logging.getLogger(__name__)
_SUBJECT = "database"


def audit_chain_intact(engine: Engine) -> list[str]:
    """The restored audit log's hash chains verify (a backup must not carry a broken or forged chain)."""
    with Session(engine) as session:
        result = audit.verify(session)
    found = result.first_break
    return [] if found is None else [f"audit chain {found.chain} broken at seq {found.seq}: {found.problem}"]


def drill_checks() -> tuple[backups.Check, ...]:
    """Checks the drill runs on the restored database besides row counts."""
    return (audit_chain_intact,)


def scratch_database(database_url: str) -> str:
    """The drill's scratch database: `<live database>_drill` on the same server."""
    return f"{make_url(database_url).database}_drill"


@job_kind("maintenance.backup", queue="maintenance", timeout=1800, max_attempts=2)
def backup() -> None:
    """Take a backup of the database, then prune backups past their retention (never the newest)."""
    settings = current().settings
    folder = Path(settings.backup_folder)
    try:
        taken = backups.take(settings.database_url, folder)
    except Exception as exc:  # re-raised: retried, then dead; the last failure also pages
        _alert_if_last("backup_failed", f"The database backup failed: {type(exc).__name__}: {exc}"[:1000])
        raise
    removed = backups.prune(folder, settings.backup_retention_days, datetime.now(UTC))
    _resolve("backup_failed")
    log.info("Backup %s: taken (%s bytes); %s old backup(s) pruned", taken.path.name, taken.size, len(removed))


@job_kind("maintenance.restore_drill", queue="maintenance", timeout=1800, max_attempts=2)
def restore_drill() -> None:
    """Restore the latest backup into a scratch database and check it; problems dead-letter and alert."""
    settings = current().settings
    result = backups.drill(Path(settings.backup_folder), settings.database_url,
                           scratch_database(settings.database_url), drill_checks())
    name = result.backup.path.name if result.backup else "-"
    if result.problems:
        # Table names and counts only: no row content reaches the error or the alert.
        summary = f"Restore drill of {name}: " + "; ".join(result.problems)
        with current().sessions.begin() as session:
            alerts.trigger(session, alerts.Condition(None, "restore_drill_failed", _SUBJECT, "critical",
                                                     summary[:1000], {"backup": name, "problems": result.problems}))
        raise PermanentError(summary)
    _resolve("restore_drill_failed")
    log.info("Backup %s: restore drill passed", name)


def _alert_if_last(condition: str, summary: str) -> None:
    """Open a critical platform alert when this is the job's last attempt."""
    with current().sessions.begin() as session:
        _, last = attempt_number(session, None, 0)
        if last:
            alerts.trigger(session, alerts.Condition(None, condition, _SUBJECT, "critical", summary, {}))


def _resolve(condition: str) -> None:
    with current().sessions.begin() as session:
        alerts.resolve(session, None, condition, _SUBJECT)
