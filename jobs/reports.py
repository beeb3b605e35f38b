"""Report job kinds: render a requested PDF (progress published as it goes); prune expired ones."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from prometheus_client import Histogram
from rq import get_current_job
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Organisation, Report, ReportSchedule, WebhookEndpoint
from app.reports import Rendered, ReportDataError, render
from app.runtime import current
from app.services import events, report_data, report_schedules, reports, webhook_deliveries
from jobs import auditing
from jobs.attempts import attempt_number
from jobs.errors import PermanentError
from jobs.spec import job_kind

log = logging.getLogger(__name__)
DURATION = Histogram("report_generation_duration_seconds", "Rendering a report, by type.", ["report_type"],
                     buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
PAGES = Histogram("report_pages", "Pages per report, by type.", ["report_type"],
                  buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000))
BYTES = Histogram("report_bytes", "PDF size per report, by type.", ["report_type"],
                  buckets=(1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7, 5e7))


@job_kind(reports.GENERATE_KIND, queue="reports")
def generate(report_id: int) -> None:
    """Gather the data, render the PDF, store it and announce `report.ready` (skipped once ready)."""
    runtime = current()
    started = time.perf_counter()
    with runtime.sessions.begin() as session:
        report = session.get(Report, report_id, with_for_update=True)
        if report is None or report.status in ("ready", "failed"):
            return
        report.status, report.started_at, report.progress = "running", func.now(), 0.0
        _, last = attempt_number(session, report.job_id, 0)
    try:
        rendered, kind = _render(report_id)
    except Exception as exc:  # a bug or an outage: retried; the last attempt leaves the report failed
        if last:
            with runtime.sessions.begin() as session:
                reports.fail(session, session.get_one(Report, report_id), f"rendering failed: {type(exc).__name__}")
        raise
    DURATION.labels(kind).observe(time.perf_counter() - started)
    PAGES.labels(kind).observe(rendered.pages)
    BYTES.labels(kind).observe(len(rendered.pdf))
    log.info("Report %s: %s pages rendered in %.1fs", report_id, rendered.pages, time.perf_counter() - started)


def _render(report_id: int) -> tuple[Rendered, str]:
    """Gather, render and store (one transaction); PermanentError when the data cannot make a report."""
    runtime = current()
    failure = None
    with runtime.sessions.begin() as session:
        report = session.get_one(Report, report_id)
        organisation = session.get_one(Organisation, report.organisation_id).name
        try:
            data = report_data.BUILDERS[report.report_type](session, report.organisation_id, report.parameters)
            rendered = render(report.report_type, data, organisation=organisation, generated_at=datetime.now(UTC),
                              progress=lambda f: reports.set_progress(runtime.engine, report_id, f * 100))
        except (ReportDataError, report_data.ReportSubjectError) as exc:
            failure = f"{type(exc).__name__}: {exc}"
            reports.fail(session, report, failure)
        else:
            session.refresh(report, with_for_update=True)  # an erasure may have withdrawn it meanwhile
            if report.status != "running":
                log.info("Report %s: %s while rendering; the PDF is not stored", report_id, report.status)
                return rendered, report.report_type
            reports.finish(session, report, rendered.pdf, rendered.pages, runtime.settings.report_retention_days,
                           datetime.now(UTC))
            auditing.record(session, "report.generate", organisation_id=report.organisation_id, resource_type="Report",
                            resource_id=report.id, patient_id=report.parameters.get("patient_id"), job_id=report.job_id)
            event_id = events.emit(session, organisation_id=report.organisation_id, type="report.ready",
                                   subject=str(report.id),
                                   payload={"report_id": report.id, "report_type": report.report_type})
            _deliver_to_schedule_endpoint(session, report, event_id)
    if failure is not None:
        raise PermanentError(f"report {report_id}: {failure}")
    return rendered, report.report_type


def _deliver_to_schedule_endpoint(session: Session, report: Report, event_id: int | None) -> None:
    """A scheduled report's `report.ready` also goes to the schedule's own endpoint (once)."""
    schedule = session.get(ReportSchedule, report.schedule_id) if report.schedule_id else None
    endpoint = session.get(WebhookEndpoint, schedule.endpoint_id) if schedule and schedule.endpoint_id else None
    if event_id is not None and endpoint is not None and endpoint.enabled and endpoint.deleted_at is None:
        webhook_deliveries.create(session, event_id, report.organisation_id, endpoint)


@job_kind("reports.prune", queue="maintenance", timeout=300, max_attempts=3)
def prune() -> None:
    """Delete reports whose retention has passed."""
    with current().sessions.begin() as session:
        abandoned = reports.fail_abandoned(session)
        removed = reports.prune(session, datetime.now(UTC))
        auditing.record(session, "retention.prune", organisation_id=None, resource_type="reports",
                        resource_id=f"{removed} rows")
    log.info("Reports: %s expired reports pruned, %s abandoned ones failed", removed, abandoned)


@job_kind(report_schedules.RUN_KIND, queue="reports")
def scheduled(schedule_id: int) -> None:
    """One run of a scheduled report: request it (rendered by its own job, `report.ready` when done)."""
    this = get_current_job()
    run_id = int(this.id) if this is not None and this.id.isdigit() else None
    with current().sessions.begin() as session:
        schedule = session.get(ReportSchedule, schedule_id)
        if schedule is None or not schedule.enabled:
            return
        if run_id is not None and session.scalar(select(Report.id).where(Report.source_job_id == run_id)):
            return  # this run's report exists: the job is running again after a crash
        report = reports.request(session, organisation_id=schedule.organisation_id, report_type=schedule.report_type,
                                 parameters=schedule.parameters, api_client_id=None, timezone=schedule.timezone)
        report.schedule_id, report.source_job_id = schedule.id, run_id
    log.info("Report schedule %s: report %s requested", schedule_id, report.id)
