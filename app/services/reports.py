"""Reports: requested (a ledger job on `reports`), rendered with progress, kept until they expire."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from app.models import Job, JobStatus, Organisation, Report
from app.services import jobs, report_periods

GENERATE_KIND = "reports.generate"


class ReportNotFoundError(LookupError):
    """No such report in this organisation."""


def request(session: Session, *, organisation_id: int, report_type: str, parameters: dict[str, Any],
            api_client_id: int | None, request_id: str | None = None, timezone: str | None = None) -> Report:
    """Record the request and queue its rendering (after commit). A relative period is resolved against
    today in `timezone` (default: the organisation's)."""
    if "period" in parameters:
        zone = timezone or session.scalar(select(Organisation.timezone).where(Organisation.id == organisation_id))
        parameters = report_periods.resolve(parameters, datetime.now(ZoneInfo(zone or "UTC")).date())
    report = Report(organisation_id=organisation_id, api_client_id=api_client_id, report_type=report_type,
                    parameters=parameters, status="queued", progress=0.0)
    session.add(report)
    session.flush()
    report.job_id = jobs.submit(session, GENERATE_KIND, report.id, organisation_id=organisation_id,
                                request_id=request_id).id
    return report


def get(session: Session, report_id: int, *, organisation_id: int) -> Report:
    """One report of the organisation."""
    report = session.get(Report, report_id)
    if report is None or report.organisation_id != organisation_id:
        raise ReportNotFoundError(f"report {report_id} not found")
    return report


def page(session: Session, *, organisation_id: int, report_type: str | None, status: str | None,
         before_id: int | None, limit: int) -> list[Report]:
    """The organisation's reports, newest first."""
    query = select(Report).where(Report.organisation_id == organisation_id).order_by(Report.id.desc()).limit(limit)
    if report_type:
        query = query.where(Report.report_type == report_type)
    if status:
        query = query.where(Report.status == status)
    if before_id is not None:
        query = query.where(Report.id < before_id)
    return list(session.scalars(query))


def set_progress(engine: Engine, report_id: int, percent: float) -> None:
    """Publish progress at once (its own autocommit statement, outside the rendering transaction)."""
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            update(Report).where(Report.id == report_id, Report.status == "running")
            .values(progress=round(min(max(percent, 0.0), 100.0), 1)))


def finish(session: Session, report: Report, pdf: bytes, pages: int, retention_days: int, now: datetime) -> None:
    """Store the rendered file; it expires after the retention period."""
    report.status, report.progress, report.pdf, report.pages, report.size = "ready", 100.0, pdf, pages, len(pdf)
    report.finished_at, report.expires_at = func.now(), now + timedelta(days=retention_days)


def fail(session: Session, report: Report, reason: str) -> None:
    """The report cannot be made (reason names ids, never PHI)."""
    report.status, report.error, report.finished_at = "failed", reason[:500], func.now()


def fail_abandoned(session: Session) -> int:
    """Reports still queued or running whose job ended (dead after a crash, cancelled, purged): failed."""
    ended = select(Job.id).where(Job.status.in_((JobStatus.DEAD.value, JobStatus.CANCELLED.value)))
    result = session.execute(update(Report).where(Report.status.in_(("queued", "running")), Report.job_id.in_(ended))
                             .values(status="failed", error="its job ended without finishing the report",
                                     finished_at=func.now()))
    return int(result.rowcount)  # type: ignore[attr-defined]


def prune(session: Session, now: datetime) -> int:
    """Delete reports past their expiry; how many."""
    return session.execute(delete(Report).where(Report.expires_at < now)).rowcount  # type: ignore[attr-defined, no-any-return]
