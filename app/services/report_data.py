"""The data of each report type, read from PostgreSQL in the shapes app.reports renders.

Parameters were validated by the API; a record that does not exist in the organisation raises
ReportSubjectError (the report fails with that reason, naming ids only).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import (
    Administration,
    Allergy,
    Immunization,
    InventoryLot,
    Medication,
    Organisation,
    Patient,
    Prescription,
    SafetyEvent,
)
from app.services import immunizations

Data = dict[str, Any]


class ReportSubjectError(LookupError):
    """A patient, safety event or query named by the parameters is not there."""


def _amount(value: Any, unit: str) -> str:
    """A dose as people write it: 10 mg, 2.5 mL (never 1E+1)."""
    return f"{format(value.normalize(), 'f')} {unit}"


def _day(value: str) -> str:
    """A FHIR date of any precision as a full date (2019-05 → 2019-05-01)."""
    parts = value[:10].split("-")
    return "-".join((parts + ["01", "01"])[:3]) if parts[0] else "1900-01-01"


def _name(patient: Patient) -> str:
    return f"{patient.given_name} {patient.family_name}"


def _identifier(patient: Patient) -> str:
    return patient.mrn or patient.student_number or f"#{patient.id}"


def _patient(session: Session, organisation_id: int, patient_id: int) -> Patient:
    patient = session.get(Patient, patient_id)
    if patient is None or patient.organisation_id != organisation_id:
        raise ReportSubjectError(f"patient {patient_id} not found")
    return patient


def _immunizations(session: Session, patient: Patient) -> list[Data]:
    """The patient's recorded immunizations (from the API, or from HL7 VXU matched by MRN), oldest first."""
    rows = session.scalars(select(Immunization).where(Immunization.patient_id == patient.id)
                           .order_by(Immunization.occurred_on, Immunization.id))
    return [{"vaccine": i.vaccine_name, "date": i.occurred_on.isoformat(), "status": i.status} for i in rows]


def student_health_summary(session: Session, organisation_id: int, params: Data) -> Data:
    """One patient: demographics, allergies, prescriptions, the last 50 administrations, immunizations."""
    patient = _patient(session, organisation_id, params["patient_id"])
    allergies = session.scalars(select(Allergy).where(Allergy.patient_id == patient.id)).all()
    prescriptions = session.execute(select(Prescription, Medication).join(Medication).where(
        Prescription.patient_id == patient.id, Prescription.active.is_(True))).all()
    given = session.execute(select(Administration, Medication).join(
        Prescription, Prescription.id == Administration.prescription_id).join(Medication).where(
        Administration.patient_id == patient.id).order_by(Administration.given_at.desc()).limit(50)).all()
    return {
        "patient": {"name": _name(patient), "date_of_birth": patient.date_of_birth.isoformat(),
                    "identifiers": [f"{k} {v}" for k, v in (("MRN", patient.mrn), ("Student", patient.student_number))
                                    if v]},
        "allergies": [{"substance": a.substance_name, "severity": a.severity, "reaction": a.reaction}
                      for a in allergies],
        "prescriptions": [{"medication": m.name, "dose": _amount(p.dose_amount, p.dose_unit),
                           "route": p.route, "times_of_day": list(p.times_of_day), "start": p.start_date.isoformat(),
                           "end": p.end_date.isoformat() if p.end_date else None} for p, m in prescriptions],
        "administrations": [{"given_at": a.given_at.isoformat(), "medication": m.name,
                             "dose": _amount(a.dose_amount, a.dose_unit), "status": a.status,
                             "by": a.administered_by} for a, m in given],
        "immunizations": _immunizations(session, patient),
    }


def _period(session: Session, organisation_id: int, params: Data) -> tuple[datetime, datetime]:
    """The inclusive days `from`..`to` as instants: midnight to midnight in the organisation's time zone."""
    zone = ZoneInfo(session.scalar(select(Organisation.timezone).where(Organisation.id == organisation_id)) or "UTC")
    start, end = date.fromisoformat(str(params["from"])), date.fromisoformat(str(params["to"]))
    return datetime.combine(start, time.min, tzinfo=zone), datetime.combine(end + timedelta(days=1), time.min, tzinfo=zone)


def medication_administration_log(session: Session, organisation_id: int, params: Data) -> Data:
    """The MAR of a patient (or the organisation) over a period, with blocked attempts and safety events."""
    start, end = _period(session, organisation_id, params)
    query = (select(Administration, Medication, Patient)
             .join(Prescription, Prescription.id == Administration.prescription_id).join(Medication)
             .join(Patient, Patient.id == Administration.patient_id)
             .where(Administration.organisation_id == organisation_id, Administration.given_at >= start,
                    Administration.given_at < end, Administration.status != "received")
             .order_by(Administration.given_at))
    events = select(SafetyEvent).where(SafetyEvent.organisation_id == organisation_id,
                                       SafetyEvent.created_at >= start, SafetyEvent.created_at < end)
    patient = None
    if params.get("patient_id") is not None:
        patient = _patient(session, organisation_id, params["patient_id"])
        query = query.where(Administration.patient_id == patient.id)
        events = events.where(SafetyEvent.patient_id == patient.id)
    rows = [{"given_at": a.given_at.isoformat(), "medication": m.name, "route": a.route,
             "dose": _amount(a.dose_amount, a.dose_unit), "status": a.status, "by": a.administered_by,
             "reason": a.reason_detail or a.reason,
             **({} if patient else {"patient": {"name": _name(p), "identifier": _identifier(p)}})}
            for a, m, p in session.execute(query)]
    return {"patient": {"name": _name(patient), "identifier": _identifier(patient)} if patient else None,
            "period": {"from": str(params["from"]), "to": str(params["to"])}, "rows": rows,
            "safety_events": [{"at": e.created_at.isoformat(), "type": e.event_type, "severity": e.severity,
                               "description": e.description} for e in session.scalars(events.order_by(SafetyEvent.id))]}


def immunization_compliance(session: Session, organisation_id: int, params: Data) -> Data:
    """Patients (all, or those listed) against the organisation's active immunization requirements."""
    today = date.fromisoformat(str(params["as_of"])) if params.get("as_of") else datetime.now(UTC).date()
    required = immunizations.requirements(session, organisation_id)
    if not required:
        raise ReportSubjectError("the organisation has no active immunization requirements")
    query = select(Patient).where(Patient.organisation_id == organisation_id)
    if params.get("patient_ids"):
        query = query.where(Patient.id.in_(params["patient_ids"]))
    patients = session.scalars(query.order_by(Patient.family_name, Patient.given_name, Patient.id)).all()
    found = immunizations.standings(session, organisation_id, today, [p.id for p in patients])
    listed = [{"name": _name(p), "identifier": _identifier(p),
               "received": {s.requirement.vaccine: s.received for s in found[p.id]},
               "overdue": [s.requirement.vaccine for s in found[p.id] if s.overdue],
               "exemptions": [s.requirement.vaccine for s in found[p.id] if s.exempt]} for p in patients]
    return {"cohort": {"name": params.get("cohort") or "All patients"},
            "requirements": [{"vaccine": r.vaccine, "doses": r.doses} for r in required], "patients": listed}


def incident_report(session: Session, organisation_id: int, params: Data) -> Data:
    """One safety event with its patient and the administration it stopped."""
    event = session.get(SafetyEvent, params["safety_event_id"])
    if event is None or event.organisation_id != organisation_id:
        raise ReportSubjectError(f"safety event {params['safety_event_id']} not found")
    patient = _patient(session, organisation_id, event.patient_id)
    adm = session.get_one(Administration, event.administration_id)
    return {"event": {"id": event.id, "type": event.event_type, "severity": event.severity,
                      "occurred_at": event.created_at.isoformat(), "description": event.description,
                      "prevented_action": event.prevented_action, "context": event.context},
            "patient": {"name": _name(patient), "identifier": _identifier(patient)},
            "administration": {"id": adm.id, "status": adm.status, "given_at": adm.given_at.isoformat(),
                               "administered_by": adm.administered_by, "device_id": adm.device_id}}


def _inventory(session: Session, organisation_id: int, params: Data) -> tuple[list[str], list[list[Any]]]:
    rows = session.execute(select(InventoryLot, Medication).join(Medication).where(
        InventoryLot.organisation_id == organisation_id).order_by(Medication.name, InventoryLot.expires_on)).all()
    return (["Medication", "Lot", "Quantity", "Reorder level", "Expires"],
            [[m.name, lot.lot_number, float(lot.quantity), float(lot.reorder_level), lot.expires_on.isoformat()]
             for lot, m in rows])


def _safety_events(session: Session, organisation_id: int, params: Data) -> tuple[list[str], list[list[Any]]]:
    query = select(SafetyEvent).where(SafetyEvent.organisation_id == organisation_id).order_by(SafetyEvent.id)
    if params.get("from") and params.get("to"):
        start, end = _period(session, organisation_id, params)
        query = query.where(SafetyEvent.created_at >= start, SafetyEvent.created_at < end)
    return (["When", "Type", "Severity", "Administration", "Description"],
            [[e.created_at.isoformat(timespec="minutes"), e.event_type, e.severity, e.administration_id,
              e.description] for e in session.scalars(query)])


#: The whitelisted queries of the custom tabular report.
QUERIES: dict[str, Callable[[Session, int, Data], tuple[list[str], list[list[Any]]]]] = {
    "inventory": _inventory,
    "safety_events": _safety_events,
}


def custom_table(session: Session, organisation_id: int, params: Data) -> Data:
    """A whitelisted query as a table, with its filters shown."""
    columns, rows = QUERIES[params["query"]](session, organisation_id, params)
    filters = {k: v for k, v in params.items() if k in ("from", "to") and v}
    return {"title": params.get("title") or params["query"].replace("_", " ").capitalize(), "columns": columns,
            "rows": rows, "filters": filters}


BUILDERS: dict[str, Callable[[Session, int, Data], Data]] = {
    "student_health_summary": student_health_summary,
    "medication_administration_log": medication_administration_log,
    "immunization_compliance": immunization_compliance,
    "incident_report": incident_report,
    "custom_table": custom_table,
}
