"""PDF rendering of Triage reports: pure functions of the data (no database, Flask or Redis).

`render(report_type, data, organisation=..., generated_at=...)` returns the PDF bytes and page
count; the shape of `data` for each type is declared in `app.reports.data`.
"""

from app.reports.render import REPORT_TYPES, Rendered, ReportDataError, render

__all__ = ["REPORT_TYPES", "Rendered", "ReportDataError", "render"]
