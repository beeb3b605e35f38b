"""Per-patient templates: the student health summary and the incident report."""

from __future__ import annotations

from pydantic import JsonValue

from app.reports.data import IncidentReport, StudentHealthSummary
from app.reports.document import ACCENT, ALERT_INK, INK, Frame, ReportDocument
from app.reports.formatting import age_on, day, flatten, label, when
from app.reports.table import Column, Styled, draw_table, is_alert, key_values, severity_cell, status_cell

_ALLERGIES = (Column("Substance", 3), Column("Severity", 1.6), Column("Reaction", 4.4))
_PRESCRIPTIONS = (Column("Medication", 3.2), Column("Dose", 1.3), Column("Route", 1.2),
                  Column("Times of day", 1.9), Column("Start", 1.4), Column("End", 1.4))
_ADMINISTRATIONS = (Column("Given at", 1.9), Column("Medication", 3.2), Column("Dose", 1.3),
                    Column("Status", 1.3), Column("By", 2.3))
_IMMUNIZATIONS = (Column("Vaccine", 4), Column("Dose", 1, "C"), Column("Date", 1.6),
                  Column("Status", 1.8))


def student_health_summary(data: StudentHealthSummary, frame: Frame) -> ReportDocument:
    """Demographics, allergies, active prescriptions, recent administrations, immunizations."""
    patient = data["patient"]
    identifiers = ", ".join(patient["identifiers"]) or "—"
    doc = frame.document("Student Health Summary",
                         f"Patient: {patient['name']}  ·  Born {patient['date_of_birth']}  ·  {identifiers}")
    frame.progress.expect(len(data["allergies"]) + len(data["prescriptions"])
                          + len(data["administrations"]) + len(data["immunizations"]))
    frame.progress.start()
    age = age_on(patient["date_of_birth"], frame.generated_at.date())
    doc.section("Patient")
    key_values(doc, [("Name", Styled(patient["name"], bold=True)),
                     ("Date of birth", f"{day(patient['date_of_birth'])} (age {age})"),
                     ("Identifiers", identifiers)])
    severe = sum(1 for a in data["allergies"] if is_alert(a["severity"]))
    doc.tiles([("Allergies" + (f" ({severe} severe)" if severe else ""), str(len(data["allergies"])),
                ALERT_INK if data["allergies"] else INK),
               ("Active prescriptions", str(len(data["prescriptions"])), ACCENT),
               ("Recent administrations", str(len(data["administrations"])), ACCENT),
               ("Immunizations", str(len(data["immunizations"])), ACCENT)])
    _allergies(doc, data)
    _medication(doc, data)
    doc.section("Immunizations")
    rows = ([i["vaccine"], str(i.get("dose_number") or "—"), day(i["date"]), status_cell(i["status"])]
            for i in data["immunizations"])
    if not draw_table(doc, _IMMUNIZATIONS, rows, caption="Immunizations"):
        doc.note("No immunizations recorded.")
    return doc


def _allergies(doc: ReportDocument, data: StudentHealthSummary) -> None:
    doc.section("Allergies")
    if not data["allergies"]:
        doc.note("No known allergies recorded.")
        return
    rows = ([Styled(a["substance"], bold=True), severity_cell(a["severity"]), a.get("reaction") or "—"]
            for a in data["allergies"])
    draw_table(doc, _ALLERGIES, rows, caption="Allergies")


def _medication(doc: ReportDocument, data: StudentHealthSummary) -> None:
    doc.section("Active prescriptions")
    if not data["prescriptions"]:
        doc.note("No active prescriptions.")
    else:
        draw_table(doc, _PRESCRIPTIONS, ([p["medication"], p["dose"], p["route"],
                                          ", ".join(p["times_of_day"]) or "As needed",
                                          day(p["start"]), day(p.get("end"), "Ongoing")]
                                         for p in data["prescriptions"]), caption="Active prescriptions")
    doc.section("Recent administrations")
    if not data["administrations"]:
        doc.note("No administrations recorded.")
    else:
        draw_table(doc, _ADMINISTRATIONS, ([when(a["given_at"]), a["medication"], a["dose"],
                                            status_cell(a["status"]), a["by"]]
                                           for a in data["administrations"]),
                   caption="Recent administrations")


def incident_report(data: IncidentReport, frame: Frame) -> ReportDocument:
    """A safety event: what happened, what was prevented, to whom, and in what context."""
    event, patient = data["event"], data["patient"]
    doc = frame.document("Incident Report", f"Patient: {patient['name']}  ·  {patient['identifier']}"
                                            f"  ·  Event {event['id']}")
    frame.progress.start()
    doc.section("Event")
    key_values(doc, [("Event ID", str(event["id"])), ("Type", Styled(label(event["type"]), bold=True)),
                     ("Severity", severity_cell(event["severity"])),
                     ("Occurred at", when(event["occurred_at"]))])
    doc.section("Description", keep_with=10)
    doc.paragraph(event["description"])
    doc.section("Prevented action")
    _mapping(doc, event["prevented_action"], "No prevented action recorded.")
    doc.section("Patient")
    key_values(doc, [("Name", Styled(patient["name"], bold=True)), ("Identifier", patient["identifier"])])
    doc.section("Administration")
    _mapping(doc, data.get("administration") or {}, "No administration was recorded for this event.")
    doc.section("Context")
    _mapping(doc, event["context"], "No further context recorded.")
    doc.section("Review", keep_with=20)
    doc.signature_lines(["Reviewed by", "Signature", "Date"])
    return doc


def _mapping(doc: ReportDocument, mapping: dict[str, JsonValue], empty: str) -> None:
    pairs = list(flatten(mapping))
    if pairs:
        key_values(doc, pairs)
    else:
        doc.note(empty)

