"""Check a report's `data` against its shape; errors name fields, never values (PHI)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from pydantic import TypeAdapter, ValidationError

from app.reports.data import (
    CustomTable,
    ImmunizationCompliance,
    IncidentReport,
    MedicationLog,
    ReportDataError,
    StudentHealthSummary,
)

_ADAPTERS: Mapping[str, TypeAdapter[Any]] = {
    "student_health_summary": TypeAdapter(StudentHealthSummary),
    "medication_administration_log": TypeAdapter(MedicationLog),
    "immunization_compliance": TypeAdapter(ImmunizationCompliance),
    "incident_report": TypeAdapter(IncidentReport),
    "custom_table": TypeAdapter(CustomTable),
}
_MAX_ERRORS = 5


def parse(report_type: str, data: object) -> Any:
    """Validate `data` for `report_type` and return it (typed by the caller's TypedDict)."""
    adapter = _ADAPTERS.get(report_type)
    if adapter is None:
        raise ReportDataError(f"unknown report type {report_type!r}")
    try:
        parsed = adapter.validate_python(data)
    except ValidationError as exc:
        raise ReportDataError(_describe(report_type, exc)) from None
    _check_rules(report_type, parsed)
    return parsed


def _describe(report_type: str, exc: ValidationError) -> str:
    """Summarise pydantic errors by location and message only (inputs are left out)."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False)[:_MAX_ERRORS]:
        where = ".".join(str(part) for part in error["loc"]) or "data"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    suffix = f" (and {more} more)" if more > 0 else ""
    return f"{report_type} data is invalid: " + "; ".join(problems) + suffix


def _check_rules(report_type: str, data: Any) -> None:
    """Rules a per-field shape cannot express."""
    if report_type == "medication_administration_log":
        if date.fromisoformat(data["period"]["from"]) > date.fromisoformat(data["period"]["to"]):
            raise ReportDataError(f"{report_type} data is invalid: period.from is after period.to")
        if not data.get("patient"):
            for index, row in enumerate(data["rows"]):
                if not row.get("patient"):
                    raise ReportDataError(
                        f"{report_type} data is invalid: rows.{index}.patient is required "
                        "when the log covers the whole organisation")
    elif report_type == "custom_table":
        width = len(data["columns"])
        for index, row in enumerate(data["rows"]):
            if len(row) != width:
                raise ReportDataError(
                    f"{report_type} data is invalid: rows.{index} has {len(row)} cells, "
                    f"expected {width} (one per column)")
