"""Render a report to PDF bytes: validate the data, lay it out, write the file."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.reports.clinical import incident_report, student_health_summary
from app.reports.data import ReportDataError
from app.reports.document import Frame, ReportDocument
from app.reports.progress import Progress
from app.reports.tabular import custom_table, immunization_compliance, medication_administration_log
from app.reports.validation import parse

__all__ = ["REPORT_TYPES", "Rendered", "ReportDataError", "render"]

_TEMPLATES: Mapping[str, Callable[[Any, Frame], ReportDocument]] = {
    "student_health_summary": student_health_summary,
    "medication_administration_log": medication_administration_log,
    "immunization_compliance": immunization_compliance,
    "incident_report": incident_report,
    "custom_table": custom_table,
}
REPORT_TYPES: tuple[str, ...] = tuple(_TEMPLATES)


@dataclass(frozen=True)
class Rendered:
    """A rendered report: the PDF file and its number of pages."""

    pdf: bytes
    pages: int


def render(report_type: str, data: dict[str, Any], *, organisation: str, generated_at: datetime,
           progress: Callable[[float], None] | None = None) -> Rendered:
    """Render one report; `progress(fraction)` is called with 0.0..1.0 as rows are laid out.

    `data` has the shape `app.reports.data` declares for `report_type`; anything missing or
    invalid raises `ReportDataError` naming the field (never its value). Progress is monotonic,
    starts at 0.0, ends at 1.0 once the file is written, and is called at most ~50 times.
    """
    if report_type not in _TEMPLATES:
        raise ReportDataError(f"unknown report type {report_type!r}; expected one of {', '.join(REPORT_TYPES)}")
    if not organisation.strip():
        raise ReportDataError("organisation is required")
    parsed = parse(report_type, data)
    tracker = Progress(progress)
    document = _TEMPLATES[report_type](parsed, Frame(organisation, generated_at, tracker))
    pdf = bytes(document.output())
    pages = document.pages_count
    tracker.finish()
    return Rendered(pdf=pdf, pages=pages)
