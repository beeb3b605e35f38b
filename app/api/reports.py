"""PDF reports: request (202 + job), follow progress, download when ready (scopes `reports:write`/`reports:read`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, g, jsonify, url_for
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from app.api import auditing
from app.api.auth import current_caller, requires
from app.api.clinical_schemas import PageQuery, Strict
from app.api.idempotency import db, idempotent, transactional
from app.api.openapi import Operation, documented
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import Problem, from_validation
from app.api.validation import body, query
from app.models import Report
from app.services import reports
from app.services.report_data import QUERIES
from app.services.report_periods import PERIODS

blueprint = Blueprint("reports", __name__, url_prefix="/v1")
_TAGS = ("reports",)


class Period(Strict):
    """An inclusive date range: `from` and `to`, or a relative `period` resolved when the report is
    requested (for a scheduled report: at each run, in the schedule's time zone)."""

    from_: date | None = Field(default=None, alias="from")
    to: date | None = None
    period: Literal[tuple(PERIODS)] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.period is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("give either period or from and to, not both")
        if self.period is None and (self.from_ is None or self.to is None):
            raise ValueError("give from and to, or a relative period")
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError("from is after to")
        return self


class SummaryParams(Strict):
    """student_health_summary: one patient."""

    patient_id: int


class MarParams(Period):
    """medication_administration_log: a patient (or, without one, the organisation) over a period."""

    patient_id: int | None = None


class ComplianceParams(Strict):
    """immunization_compliance: patients (all, or a cohort's ids) against the organisation's immunization
    requirements on a day (default: today), with a cohort name for the title."""

    patient_ids: Annotated[list[int], Field(min_length=1, max_length=10000)] | None = None
    cohort: Annotated[str, Field(max_length=200)] | None = None
    as_of: date | None = None


class IncidentParams(Strict):
    """incident_report: one safety event."""

    safety_event_id: int


class CustomParams(Strict):
    """custom_table: one of the whitelisted queries, with optional dates and title."""

    query: Literal[tuple(QUERIES)]  # type: ignore[valid-type]
    title: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    from_: date | None = Field(default=None, alias="from")
    to: date | None = None
    period: Literal[tuple(PERIODS)] | None = None  # type: ignore[valid-type]


PARAMETERS: dict[str, type[BaseModel]] = {
    "student_health_summary": SummaryParams,
    "medication_administration_log": MarParams,
    "immunization_compliance": ComplianceParams,
    "incident_report": IncidentParams,
    "custom_table": CustomParams,
}


class ReportIn(Strict):
    """A report to make: its type and that type's parameters."""

    type: Literal[tuple(PARAMETERS)]  # type: ignore[valid-type]
    parameters: dict[str, Any] = Field(default_factory=dict)


class ReportOut(BaseModel):
    """A report's state: queued, running (with progress 0–100), ready (download it) or failed."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    report_type: str
    parameters: dict[str, Any]
    status: str
    progress: float
    pages: int | None
    size: int | None
    error: str | None
    job_id: int | None
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime | None


class ReportPage(BaseModel):
    """A page of reports."""

    items: list[ReportOut]
    next_cursor: str | None


class ReportQuery(PageQuery):
    """Reports by type and status."""

    type: Literal[tuple(PARAMETERS)] | None = None  # type: ignore[valid-type]
    status: Literal["queued", "running", "ready", "failed"] | None = None


def _out(report: Report) -> dict[str, Any]:
    out = ReportOut.model_validate(report).model_dump(mode="json")
    out["links"] = {"self": url_for("reports.get_report", report_id=report.id),
                    "pdf": url_for("reports.download_report", report_id=report.id)}
    return out


def _parameters(request: ReportIn) -> dict[str, Any]:
    try:
        params = TypeAdapter(PARAMETERS[request.type]).validate_python(request.parameters)
    except ValidationError as exc:
        raise from_validation(exc, "body") from None
    return params.model_dump(mode="json", by_alias=True, exclude_none=True)


@blueprint.post("/reports")
@requires("reports:write")
@idempotent()
@documented(Operation("Request a PDF report (rendered on the reports queue)",
                      audit="report.create", audit_resource="Report", body=ReportIn, response=ReportOut,
                      status=202, idempotent=True, errors=(401, 403, 422), tags=_TAGS))
def request_report() -> tuple[Response, int, dict[str, str]]:
    """202 with the report and its job; follow `links.self` for progress."""
    wanted = body(ReportIn)
    caller = current_caller()
    report = reports.request(db(), organisation_id=caller.organisation_id, report_type=wanted.type,
                             parameters=_parameters(wanted), api_client_id=caller.client_id,
                             request_id=g.get("request_id"))
    auditing.subject(resource_id=report.id, patient_id=report.parameters.get("patient_id"))
    return jsonify(_out(report)), 202, {"Location": url_for("reports.get_report", report_id=report.id)}


def _report(report_id: int) -> Report:
    try:
        report = reports.get(db(), report_id, organisation_id=current_caller().organisation_id)
    except reports.ReportNotFoundError:
        raise Problem(404, "Not Found", f"No report {report_id}.") from None
    auditing.subject(resource_id=report.id, patient_id=report.parameters.get("patient_id"))
    return report


@blueprint.get("/reports/<int:report_id>")
@requires("reports:read")
@documented(Operation("A report's status and progress",
                      audit="report.read", audit_resource="Report", response=ReportOut, errors=(401, 403, 404), tags=_TAGS))
@transactional
def get_report(report_id: int) -> Response:
    """Progress (percent) moves while the job renders."""
    return jsonify(_out(_report(report_id)))


@blueprint.get("/reports/<int:report_id>.pdf")
@requires("reports:read")
@documented(Operation("Download a ready report (application/pdf); 409 while it is not ready",
                      audit="report.export", audit_resource="Report",
                      errors=(401, 403, 404, 409), tags=_TAGS))
@transactional
def download_report(report_id: int) -> Response:
    """The PDF as an attachment."""
    report = _report(report_id)
    if report.status != "ready" or report.pdf is None:
        raise Problem(409, "Conflict", f"Report {report_id} is {report.status}, not ready.", "report-not-ready",
                      extensions={"status": report.status, "progress": report.progress})
    name = f"{report.report_type}-{report.id}.pdf"
    return Response(bytes(report.pdf), mimetype="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"})


@blueprint.get("/reports")
@requires("reports:read")
@documented(Operation("List reports, newest first",
                      audit="report.list", audit_resource="Report", query=ReportQuery, response=ReportPage,
                      errors=(401, 403, 422), tags=_TAGS))
@transactional
def list_reports() -> Response:
    """By type and status."""
    params = query(ReportQuery)
    rows = reports.page(db(), organisation_id=current_caller().organisation_id, report_type=params.type,
                        status=params.status, before_id=decode_cursor(params.cursor), limit=params.limit)
    cursor = encode_cursor(rows[-1].id) if len(rows) == params.limit else None
    return jsonify({"items": [_out(r) for r in rows], "next_cursor": cursor})
