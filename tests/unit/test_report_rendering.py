"""PDF report rendering: every template opens, paginates, repeats headings and prints UTF-8."""

from __future__ import annotations

import io
import re
import time
import tracemalloc
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest
from pypdf import PdfReader

from app.reports import REPORT_TYPES, Rendered, ReportDataError, render

GENERATED_AT = datetime(2025, 3, 4, 14, 2, tzinfo=UTC)
ORGANISATION = "Escuela Ñandú — Health Office"
NAMES = ("José Müller", "Αλέξανδρος Παπαδόπουλος", "Иван Петров", "Zoë O'Brien")


def health_summary() -> dict[str, Any]:
    return {
        "patient": {"name": "José Müller", "date_of_birth": "2012-04-01", "identifiers": ["MRN 1001", "Student 17"]},
        "allergies": [{"substance": "Peanut", "severity": "severe", "reaction": "Anaphylaxis; carries an EpiPen"},
                      {"substance": "Penicillin", "severity": "moderate"}],
        "prescriptions": [{"medication": "Methylphenidate", "dose": "10 mg", "route": "oral",
                           "times_of_day": ["08:00", "12:30"], "start": "2025-01-06", "end": None}],
        "administrations": [{"given_at": "2025-03-03T12:31:00+01:00", "medication": "Methylphenidate",
                             "dose": "10 mg", "status": "recorded", "by": "Nurse Ana Ruiz"},
                            {"given_at": "2025-03-03T12:40:00+01:00", "medication": "Amoxicillin",
                             "dose": "250 mg", "status": "blocked", "by": "Nurse Ana Ruiz"}],
        "immunizations": [{"vaccine": "MMR", "date": "2013-05-01", "dose_number": 1, "status": "completed"}],
    }


def mar(rows: int, *, organisation: bool = True) -> dict[str, Any]:
    statuses = ("recorded", "recorded", "recorded", "blocked", "rejected")
    return {
        "period": {"from": "2025-03-01", "to": "2025-03-31"},
        **({} if organisation else {"patient": {"name": "José Müller", "identifier": "MRN 1001"}}),
        "rows": [{"given_at": f"2025-03-{i % 28 + 1:02d}T08:{i % 60:02d}:00",
                  "patient": {"name": NAMES[i % len(NAMES)], "identifier": f"MRN {1000 + i % 300}"},
                  "medication": "Methylphenidate hydrochloride extended release", "dose": "10 mg",
                  "route": "oral", "status": statuses[i % 5], "by": "Nurse Ana Ruiz",
                  "reason": "Allergy conflict with a documented penicillin allergy" if i % 5 == 3 else None}
                 for i in range(rows)],
        "safety_events": [{"at": "2025-03-04T08:03:00", "type": "allergy_conflict", "severity": "high",
                           "description": "Administration blocked: documented severe allergy to penicillin."}],
    }


def compliance(patients: int = 12) -> dict[str, Any]:
    return {
        "cohort": {"name": "Year 5 — Class B"},
        "requirements": [{"vaccine": "MMR", "doses": 2}, {"vaccine": "DTaP", "doses": 5},
                         {"vaccine": "Hepatitis B", "doses": 3}, {"vaccine": "Varicella", "doses": 2}],
        "patients": [{"name": NAMES[i % len(NAMES)], "identifier": f"S-{i:03d}",
                      "received": {"MMR": 2, "DTaP": 4 + i % 2, "Hepatitis B": 3, "Varicella": i % 3},
                      "overdue": ["Varicella"] if i % 3 == 0 else [],
                      "exemptions": ["Hepatitis B"] if i % 4 == 1 else []} for i in range(patients)],
    }


def incident() -> dict[str, Any]:
    return {
        "event": {"id": 4711, "type": "allergy_conflict", "severity": "critical",
                  "occurred_at": "2025-03-04T08:03:00+01:00",
                  "description": "Amoxicillin 250 mg was scanned for José Müller, who has a documented "
                                 "moderate penicillin allergy. The administration was blocked. " * 3,
                  "prevented_action": {"medication": "Amoxicillin", "dose": "250 mg", "route": "oral"},
                  "context": {"allergy": {"substance": "Penicillin", "severity": "moderate"}, "override": False}},
        "patient": {"name": "José Müller", "identifier": "MRN 1001"},
        "administration": {"scheduled_for": "2025-03-04T08:00:00", "attempted_by": "Nurse Ana Ruiz"},
    }


def custom(rows: int = 40) -> dict[str, Any]:
    return {
        "title": "Blocked administrations by medication",
        "columns": ["Medication", "Patient", "Blocked", "Rate", "Last reason"],
        "rows": [[f"Medication {i}", NAMES[i % len(NAMES)], i * 3, 0.25, "Duplicate dose within 4 h" if i % 2 else None]
                 for i in range(rows)],
        "filters": {"Status": "blocked", "From": "2025-03-01", "Ward": "Ñ-2"},
    }


SAMPLES = {"student_health_summary": health_summary, "medication_administration_log": lambda: mar(40),
           "immunization_compliance": compliance, "incident_report": incident, "custom_table": custom}


def build(report_type: str, data: dict[str, Any], **kwargs: Any) -> Rendered:
    return render(report_type, data, organisation=ORGANISATION, generated_at=GENERATED_AT, **kwargs)


def page_texts(rendered: Rendered) -> list[str]:
    reader = PdfReader(io.BytesIO(rendered.pdf))
    return [page.extract_text() for page in reader.pages]


@pytest.mark.parametrize("report_type", REPORT_TYPES)
def test_each_report_renders_a_pdf_with_header_footer_and_utf8_names(report_type: str) -> None:
    rendered = build(report_type, SAMPLES[report_type]())
    texts = page_texts(rendered)
    assert rendered.pdf.startswith(b"%PDF-") and len(texts) == rendered.pages >= 1
    assert b"DejaVuSans" in rendered.pdf and b"/Helvetica" not in rendered.pdf  # embedded, never core
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {rendered.pages}" in text
        assert ORGANISATION in text and "Generated 2025-03-04 14:02 UTC" in text
    assert "José Müller" in "".join(texts) or "Αλέξανδρος Παπαδόπουλος" in "".join(texts)


def test_a_multi_page_log_repeats_column_headings_and_counts_its_pages() -> None:
    rendered = build("medication_administration_log", mar(300))
    texts = page_texts(rendered)
    assert rendered.pages == len(texts) >= 3
    for text in texts[1:]:
        assert "Given at" in text and "Reason / note" in text and "Administrations (continued)" in text
    assert "Page 3 of" in texts[2] and "Иван Петров" in "".join(texts)


def test_a_custom_table_of_exactly_three_pages() -> None:
    def table(rows: int) -> dict[str, Any]:  # identical rows: the layout does not depend on the count
        return {**custom(0), "rows": [[f"Medication {i:04d}", "José Müller", 120, 0.25, "Duplicate dose"]
                                      for i in range(rows)]}

    long = page_texts(build("custom_table", table(300)))
    first_two_pages = sum(len(re.findall(r"Medication \d{4}", text)) for text in long[:2])
    assert build("custom_table", table(first_two_pages)).pages == 2
    rendered = build("custom_table", table(first_two_pages + 1))
    texts = page_texts(rendered)
    assert rendered.pages == len(texts) == 3
    assert re.findall(r"Medication \d{4}", texts[2]) == [f"Medication {first_two_pages:04d}"]
    assert all("Last reason" in text and "Patient" in text for text in texts)
    assert "Page 3 of 3" in texts[2] and "Ward: Ñ-2" in texts[0]


def test_compliance_summarises_overdue_and_exemptions() -> None:
    text = "".join(page_texts(build("immunization_compliance", compliance(12))))
    assert "Overdue: Varicella" in text and "Exempt" in text and "Compliant" in text
    assert "Hepatitis B" in text and "2 / 2" in text


def test_empty_sections_print_a_note_instead_of_an_empty_table() -> None:
    data = {**health_summary(), "allergies": [], "prescriptions": [], "administrations": [], "immunizations": []}
    text = "".join(page_texts(build("student_health_summary", data)))
    assert "No known allergies recorded." in text and "No immunizations recorded." in text
    assert "Substance" not in text and "Vaccine" not in text


def test_a_cell_taller_than_a_page_is_cut_and_long_words_are_broken() -> None:
    data = custom(3)
    data["rows"][1][4] = "Long free text " * 2000
    data["rows"][2][0] = "Supercalifragilistic" * 10
    rendered = build("custom_table", data)
    text = "".join(page_texts(rendered))
    assert rendered.pages == 3 and "…" in text and "Medication 0" in text


def test_progress_runs_from_zero_to_one_monotonically_and_is_throttled() -> None:
    calls: list[float] = []
    build("medication_administration_log", mar(1000), progress=calls.append)
    assert calls[0] == 0.0 and calls[-1] == 1.0 and len(calls) <= 55
    assert all(a < b for a, b in pairwise(calls))


def test_progress_for_a_report_without_rows_still_starts_and_finishes() -> None:
    calls: list[float] = []
    build("incident_report", incident(), progress=calls.append)
    assert calls == [0.0, 1.0]


@pytest.mark.parametrize(("report_type", "data", "field"), [
    ("student_health_summary", {**health_summary(), "patient": {"name": "José Müller"}}, "patient.date_of_birth"),
    ("student_health_summary", {**health_summary(), "immunizations": [{"vaccine": "MMR", "date": "01/05/2013",
                                                                        "status": "completed"}]},
     "immunizations.0.date"),
    ("medication_administration_log", {**mar(2), "rows": [{**mar(1)["rows"][0], "status": "lost"}]}, "rows.0.status"),
    ("medication_administration_log", {**mar(1), "period": {"from": "2025-04-01", "to": "2025-03-01"}},
     "period.from"),
    ("medication_administration_log", {**mar(1), "rows": [{**mar(1)["rows"][0], "patient": None}]}, "rows.0.patient"),
    ("immunization_compliance", {**compliance(), "requirements": []}, "requirements"),
    ("incident_report", {"patient": {"name": "José Müller", "identifier": "MRN 1001"}}, "event"),
    ("custom_table", {**custom(2), "rows": [["only one cell"]]}, "rows.0"),
])
def test_invalid_data_raises_a_report_data_error_naming_the_field_not_the_value(
        report_type: str, data: dict[str, Any], field: str) -> None:
    with pytest.raises(ReportDataError) as caught:
        build(report_type, data)
    assert field in str(caught.value)
    assert "Müller" not in str(caught.value) and "01/05/2013" not in str(caught.value)


def test_unknown_report_type_and_non_dict_data_are_rejected() -> None:
    with pytest.raises(ReportDataError, match="unknown report type"):
        build("everything", {})
    with pytest.raises(ReportDataError, match="custom_table data is invalid"):
        build("custom_table", ["not", "a", "dict"])  # type: ignore[arg-type]


def test_a_5000_row_log_renders_in_reasonable_time_and_memory() -> None:
    data = mar(5000)
    started = time.perf_counter()
    rendered = build("medication_administration_log", data)
    elapsed = time.perf_counter() - started
    tracemalloc.start()  # a second, traced run: tracing slows rendering several-fold
    try:
        build("medication_administration_log", data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"5,000-row MAR: {elapsed:.1f} s, peak {peak / 2**20:.0f} MiB (tracemalloc), "
          f"{rendered.pages} pages, {len(rendered.pdf) / 2**20:.1f} MiB")
    assert elapsed < 20 and peak < 200 * 2**20
    assert rendered.pages == len(PdfReader(io.BytesIO(rendered.pdf)).pages) > 100
