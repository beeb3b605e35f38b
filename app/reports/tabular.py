"""Table-heavy templates: the medication administration log, immunization compliance, custom."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from app.reports.data import (
    CompliancePatient,
    CustomTable,
    ImmunizationCompliance,
    MedicationLog,
    Requirement,
    Scalar,
)
from app.reports.document import (
    ACCENT,
    ALERT_FILL,
    ALERT_INK,
    INK,
    OK_INK,
    WARN_FILL,
    WARN_INK,
    Frame,
    ReportDocument,
)
from app.reports.formatting import day, label, plural, scalar, when
from app.reports.table import Cell, Column, Styled, draw_table, severity_cell, status_cell

_SAFETY = (Column("At", 1.5), Column("Type", 1.9), Column("Severity", 1.1), Column("Description", 6.5))
_LANDSCAPE_COLUMNS = 6
_SAMPLE_ROWS = 200


def medication_administration_log(data: MedicationLog, frame: Frame) -> ReportDocument:
    """The MAR for one patient or the organisation: every attempt, then the safety events."""
    patient = data.get("patient")
    period = f"{day(data['period']['from'])} to {day(data['period']['to'])}"
    scope = f"Patient: {patient['name']}  ·  {patient['identifier']}" if patient else "Whole organisation"
    doc = frame.document("Medication Administration Log", f"{scope}  ·  Period {period}", landscape=True)
    frame.progress.expect(len(data["rows"]) + len(data["safety_events"]))
    frame.progress.start()
    statuses = Counter(row["status"] for row in data["rows"])
    doc.tiles([("Administration attempts", f"{len(data['rows']):,}", ACCENT),
               ("Recorded", f"{statuses['recorded']:,}", OK_INK),
               ("Blocked", f"{statuses['blocked']:,}", ALERT_INK if statuses["blocked"] else INK),
               ("Rejected", f"{statuses['rejected']:,}", ALERT_INK if statuses["rejected"] else INK),
               ("Safety events", f"{len(data['safety_events']):,}",
                ALERT_INK if data["safety_events"] else INK)])
    doc.section("Administrations")
    columns = [Column("Given at", 1.45), Column("Medication", 2.5), Column("Dose", 0.9),
               Column("Route", 0.8), Column("Status", 0.95), Column("By", 1.7), Column("Reason / note", 2.8)]
    if not patient:
        columns.insert(1, Column("Patient", 2.5))
    if not draw_table(doc, columns, _mar_rows(data, with_patient=not patient), caption="Administrations"):
        doc.note("No administrations in this period.")
    doc.section("Safety events")
    rows = ([when(e["at"]), label(e["type"]), severity_cell(e["severity"]), e["description"]]
            for e in data["safety_events"])
    if not draw_table(doc, _SAFETY, rows, caption="Safety events"):
        doc.note("No safety events in this period.")
    return doc


def _mar_rows(data: MedicationLog, *, with_patient: bool) -> Iterator[list[Cell]]:
    for row in data["rows"]:
        cells: list[Cell] = [when(row["given_at"]), row["medication"], row["dose"], row["route"],
                             status_cell(row["status"]), row["by"], row.get("reason") or ""]
        patient = row.get("patient")
        if with_patient and patient:
            cells.insert(1, f"{patient['name']}\n{patient['identifier']}")
        yield cells


def immunization_compliance(data: ImmunizationCompliance, frame: Frame) -> ReportDocument:
    """Required vs received doses per patient, overdue highlighted, exemptions noted."""
    requirements, patients = data["requirements"], data["patients"]
    doc = frame.document("Immunization Compliance Report",
                         f"Cohort: {data['cohort']['name']}  ·  {plural(len(patients), 'patient')}",
                         landscape=len(requirements) + 2 > _LANDSCAPE_COLUMNS)
    frame.progress.expect(len(patients) + len(requirements))
    frame.progress.start()
    standings = Counter(_standing(p, requirements) for p in patients)
    exempt = sum(1 for p in patients if p["exemptions"])
    doc.tiles([("Patients", f"{len(patients):,}", ACCENT), ("Compliant", f"{standings['Compliant']:,}", OK_INK),
               ("Overdue", f"{standings['Overdue']:,}", ALERT_INK if standings["Overdue"] else INK),
               ("Not yet complete", f"{standings['Not yet complete']:,}", WARN_INK),
               ("With exemptions", f"{exempt:,}", INK)])
    doc.section("By requirement")
    draw_table(doc, (Column("Vaccine", 3), Column("Doses required", 1.3, "R"), Column("Complete", 1.2, "R"),
                     Column("Overdue", 1.2, "R"), Column("Exempt", 1.2, "R"), Column("Coverage", 1.2, "R")),
               (_requirement_row(r, patients) for r in requirements), caption="By requirement")
    doc.section("Patients")
    columns = [Column("Patient", 3.2)] + [Column(r["vaccine"], _heading_weight(r["vaccine"]), "C")
                                          for r in requirements]
    columns.append(Column("Standing", 2.2))
    rows = ([f"{p['name']}\n{p['identifier']}", *(_dose_cell(p, r) for r in requirements),
             _standing_cell(p, requirements)] for p in patients)
    if draw_table(doc, columns, rows, caption="Patients"):
        doc.note("Cells show doses received / required. Red: overdue. Amber: exempt.")
    else:
        doc.note("No patients in this cohort.")
    return doc


def _heading_weight(title: str) -> float:
    """Wide enough that the longest word of a vaccine's name is not split across lines."""
    return max(1.3, 0.14 * max(len(word) for word in title.split()))


def _received(patient: CompliancePatient, requirement: Requirement) -> int:
    return patient["received"].get(requirement["vaccine"], 0)


def _standing(patient: CompliancePatient, requirements: Sequence[Requirement]) -> str:
    if patient["overdue"]:
        return "Overdue"
    done = all(r["vaccine"] in patient["exemptions"] or _received(patient, r) >= r["doses"]
               for r in requirements)
    return "Compliant" if done else "Not yet complete"


def _standing_cell(patient: CompliancePatient, requirements: Sequence[Requirement]) -> Cell:
    standing = _standing(patient, requirements)
    suffix = f"\nExempt: {', '.join(patient['exemptions'])}" if patient["exemptions"] else ""
    if standing == "Overdue":
        return Styled("Overdue: " + ", ".join(patient["overdue"]) + suffix, bold=True, ink=ALERT_INK)
    return Styled(standing + suffix, ink=OK_INK if standing == "Compliant" else WARN_INK)


def _dose_cell(patient: CompliancePatient, requirement: Requirement) -> Cell:
    vaccine, count = requirement["vaccine"], _received(patient, requirement)
    if vaccine in patient["exemptions"]:
        return Styled("Exempt", ink=WARN_INK, fill=WARN_FILL)
    text = f"{count} / {requirement['doses']}"
    if vaccine in patient["overdue"]:
        return Styled(text + "\noverdue", bold=True, ink=ALERT_INK, fill=ALERT_FILL)
    return Styled(text, ink=OK_INK) if count >= requirement["doses"] else text


def _requirement_row(requirement: Requirement, patients: Sequence[CompliancePatient]) -> list[Cell]:
    vaccine = requirement["vaccine"]
    exempt = sum(1 for p in patients if vaccine in p["exemptions"])
    overdue = sum(1 for p in patients if vaccine in p["overdue"] and vaccine not in p["exemptions"])
    complete = sum(1 for p in patients if vaccine not in p["exemptions"]
                   and _received(p, requirement) >= requirement["doses"])
    eligible = len(patients) - exempt
    coverage = f"{100 * complete / eligible:.0f}%" if eligible else "—"
    return [vaccine, str(requirement["doses"]), f"{complete:,}",
            Styled(f"{overdue:,}", bold=True, ink=ALERT_INK) if overdue else "0", f"{exempt:,}", coverage]


def custom_table(data: CustomTable, frame: Frame) -> ReportDocument:
    """A titled table from a whitelisted query, with its filters under the title."""
    columns, rows = data["columns"], data["rows"]
    doc = frame.document(data["title"], plural(len(rows), "row"),
                         landscape=len(columns) > _LANDSCAPE_COLUMNS)
    frame.progress.expect(len(rows))
    frame.progress.start()
    filters = data.get("filters") or {}
    text = "  ·  ".join(f"{name}: {scalar(value)}" for name, value in filters.items())
    doc.paragraph(f"Filters — {text}" if text else "Filters — none", size=8.5)
    table = _custom_columns(columns, rows)
    if not draw_table(doc, table, ([scalar(cell) for cell in row] for row in rows), caption=data["title"]):
        doc.note("No rows match these filters.")
    return doc


def _custom_columns(titles: Sequence[str], rows: Sequence[Sequence[Scalar]]) -> list[Column]:
    """Widths from the heading and a sample of cells; numeric columns right-aligned."""
    sample = rows[:_SAMPLE_ROWS]
    columns = []
    for index, title in enumerate(titles):
        values = [row[index] for row in sample if row[index] is not None]
        lengths = sorted(len(scalar(value)) for value in values)
        typical = lengths[int(0.9 * (len(lengths) - 1))] if lengths else 0  # the 90th percentile
        longest_word = max((len(word) for word in title.split()), default=4)
        weight = min(max(typical * 1.1, longest_word, 4), 40)
        numeric = bool(values) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        columns.append(Column(title, weight, "R" if numeric else "L"))
    return columns
