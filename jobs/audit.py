"""Audit log job kinds: verify the hash chains daily (alerting on a break), archive records past their retention."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from rq import get_current_job

from app.runtime import current
from app.services import alerts, audit, audit_archive
from jobs.errors import PermanentError
from jobs.spec import job_kind

log = logging.getLogger(__name__)

#: The alert of a broken chain: one platform-wide condition, whichever chain broke.
CONDITION = "audit_chain_broken"
SUBJECT = "audit-log"


def _ledger_id() -> int | None:
    this = get_current_job()
    return int(this.id) if this is not None and this.id.isdigit() else None


def broken_chain(found: audit.Break) -> alerts.Condition:
    """The critical alert of a broken link: chain, seq, record id and problem only (no PHI)."""
    return alerts.Condition(
        organisation_id=None, condition=CONDITION, subject=SUBJECT, severity="critical",
        summary=f"Audit log chain {found.chain} broken at seq {found.seq}: {found.problem}",
        details={"chain": found.chain, "seq": found.seq, "record_id": found.id, "problem": found.problem},
    )


@job_kind("maintenance.audit_verify", queue="maintenance", timeout=3600, max_attempts=2)
def verify_chains() -> None:
    """Walk every audit chain and the archives it starts from (a forged archive row must not hide
    deleted records); trigger a critical alert on a break, resolve it once everything verifies."""
    runtime = current()
    with runtime.sessions() as session:
        result = audit_archive.verify_archives(session, Path(runtime.settings.audit_archive_folder))
        if result.ok:
            result = audit.verify(session)
    with runtime.sessions.begin() as session:
        if result.first_break is None:
            alerts.resolve(session, None, CONDITION, SUBJECT)
        else:
            alerts.trigger(session, broken_chain(result.first_break))
    log.info("Audit log: %s records verified, %s", result.records_checked, "ok" if result.ok else "BROKEN")


@job_kind("maintenance.audit_archive", queue="maintenance", timeout=3600, max_attempts=3)
def archive_expired() -> None:
    """Archive and remove audit records past their retention, one chain-day per transaction."""
    runtime = current()
    folder, days = Path(runtime.settings.audit_archive_folder), runtime.settings.audit_retention_days
    today, job_id, total = datetime.now(UTC).date(), _ledger_id(), 0
    while True:
        try:
            with runtime.sessions.begin() as session:
                made = audit_archive.archive(session, folder, today, days, actor_id=f"job:{job_id}" if job_id else None,
                                             job_id=job_id, max_days=1)
        except audit_archive.ArchiveError as exc:
            raise PermanentError(str(exc)) from exc
        if not made:
            break
        total += 1
    log.info("Audit log: %s chain-days archived", total)
