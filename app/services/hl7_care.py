"""VXU^V04 and SIU (S12–S15, S26) → immunization and appointment rows, so reminders and reports see HL7 data.

The clinical patient is the one whose MRN is a PID-3 value of the message's Patient. An
immunization needs that patient; an appointment is kept without one. Each row remembers the
FHIR resource it came from (`source_ref`), so reprocessing a message updates the same row, and an
older message processed after a newer one changes nothing (the FHIR store's own ordering rule).
What cannot be recorded is reported as a warning on the message (ids only, no PHI).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import Appointment, FhirResource, Immunization
from app.models.care import APPOINTMENT_STATUSES, IMMUNIZATION_STATUSES
from app.services.hl7_administrations import StoredMessage, clinical_patient


def _coding(concept: dict[str, Any] | None) -> dict[str, Any]:
    first: dict[str, Any] = ((concept or {}).get("coding") or [{}])[0]
    return first


def _immunization(resource: dict[str, Any], patient_id: int) -> dict[str, Any] | None:
    coding, when = _coding(resource.get("vaccineCode")), str(resource.get("occurrenceDateTime") or "")
    if not coding.get("code") or len(when) < 10 or resource.get("status") not in IMMUNIZATION_STATUSES:
        return None
    return {"patient_id": patient_id, "vaccine_code": str(coding["code"])[:64],
            "vaccine_name": str(resource["vaccineCode"].get("text") or coding.get("display") or coding["code"])[:200],
            "occurred_on": date.fromisoformat(when[:10]), "lot_number": (resource.get("lotNumber") or None),
            "status": resource["status"]}


def _appointment(resource: dict[str, Any], patient_id: int | None) -> dict[str, Any] | None:
    if not resource.get("start") or resource.get("status", "booked") not in APPOINTMENT_STATUSES:
        return None
    return {"patient_id": patient_id, "start": datetime.fromisoformat(resource["start"]),
            "end": datetime.fromisoformat(resource["end"]) if resource.get("end") else None,
            "status": resource.get("status", "booked"),
            "description": (resource.get("serviceType") or [{}])[0].get("text"),
            "location": None}


def _upsert(session: Session, model: type[Immunization | Appointment], organisation_id: int, ref: str,
            values: dict[str, Any]) -> bool:
    """Insert or update the row made from `ref`; False when another row already holds the same fact."""
    row = {"organisation_id": organisation_id, "source": "hl7", "source_ref": ref, **values}
    statement = insert(model).values(row).on_conflict_do_update(
        index_elements=["organisation_id", "source_ref"], set_={**values, "updated_at": func.now()})
    try:
        with session.begin_nested():
            session.execute(statement)
    except IntegrityError:
        return False
    return True


def _superseded(session: Session, message: StoredMessage, ref: str) -> bool:
    """Whether a later message wrote this resource (messages may be processed out of order)."""
    kind, _, resource_id = ref.partition("/")
    writer = session.scalar(select(FhirResource.message_id).where(
        FhirResource.organisation_id == message.organisation_id, FhirResource.resource_type == kind,
        FhirResource.id == resource_id))
    return writer is not None and writer != message.id


def record(session: Session, message: StoredMessage, resources: list[dict[str, Any]], stored: list[str]) -> list[str]:
    """Record the message's immunizations and appointments; warnings for what could not be."""
    patient = clinical_patient(session, message.organisation_id,
                               next((r for r in resources if r["resourceType"] == "Patient"), None))
    warnings = []
    for resource, ref in zip(resources, stored, strict=True):
        kind = resource["resourceType"]
        if kind not in ("Immunization", "Appointment") or _superseded(session, message, ref):
            continue
        if kind == "Immunization":
            values = _immunization(resource, patient.id) if patient else None
            model: type[Immunization | Appointment] = Immunization
        else:
            values, model = _appointment(resource, patient.id if patient else None), Appointment
        if values is None or not _upsert(session, model, message.organisation_id, ref, values):
            warnings.append(f"{ref}: not recorded as an {kind.lower()} (no matching patient, code or date, "
                            "or already recorded)")
    return warnings
