"""RAS^O17 → a medication administration recorded through the administrations service, idempotently.

Each completed MedicationAdministration mapped from a RAS becomes an administration record, safety
checked like any other. The clinical patient is found by MRN (a PID-3 value); the prescription by
the order's placer number (ORC-2) when that is a Triage prescription id of that patient, else
the patient's one prescription for the same medication code. The record id is derived from the
sender and the dose itself (order, RXA sub-ids, time given), so a repeated or reprocessed message —
even resent under a new MSH-10 — records the dose once.
What cannot be matched is reported as a warning on the message (ids only, no PHI).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Medication, Patient, Prescription
from app.services import administrations, clinical


class StoredMessage(Protocol):
    """What recording from a stored HL7 message reads of it (an `Hl7Message` row, or the
    transform's own copy of its columns)."""

    @property
    def id(self) -> int: ...

    @property
    def organisation_id(self) -> int: ...

    @property
    def sender(self) -> str: ...


_NAMESPACE = uuid.UUID("0f4e0a55-8c1e-4a53-b6a8-9a7f4c2d1e01")


def _medical_record_numbers(patient: dict[str, Any] | None) -> list[str]:
    """PID-3 values typed MR (medical record number); other identifiers (SSN, visit…) never match."""
    return [i["value"] for i in (patient or {}).get("identifier", []) if i.get("value")
            and any(c.get("code") == "MR" for c in (i.get("type") or {}).get("coding", []))]


def clinical_patient(session: Session, organisation_id: int, patient: dict[str, Any] | None) -> Patient | None:
    """The one clinical patient with that MRN (none, or more than one, is no match)."""
    values = _medical_record_numbers(patient)
    if not values:
        return None
    found = session.scalars(select(Patient).where(Patient.organisation_id == organisation_id,
                                                  Patient.mrn.in_(values)).limit(2)).all()
    return found[0] if len(found) == 1 else None


def _prescription(session: Session, patient: Patient, given: dict[str, Any]) -> Prescription | None:
    placer = str(((given.get("request") or {}).get("identifier") or {}).get("value", ""))
    if placer.isdigit():
        found = session.get(Prescription, int(placer))
        if found is not None and found.patient_id == patient.id:
            return found
    codes = [c.get("code") for c in (given.get("medicationCodeableConcept") or {}).get("coding", []) if c.get("code")]
    candidates = session.scalars(
        select(Prescription).join(Medication, Medication.id == Prescription.medication_id)
        .where(Prescription.patient_id == patient.id, Medication.code.in_(codes))).all() if codes else []
    return candidates[0] if len(candidates) == 1 else None


def _record(message: StoredMessage, given: dict[str, Any], patient: Patient, prescription: Prescription
            ) -> dict[str, Any] | None:
    dose = (given.get("dosage") or {}).get("dose") or {}
    when = given.get("effectiveDateTime") or (given.get("effectivePeriod") or {}).get("start")
    if dose.get("value") is None or not when or "T" not in when:
        return None
    route = ((given.get("dosage") or {}).get("route") or {}).get("coding", [{}])[0]
    performer = ((given.get("performer") or [{}])[0].get("actor") or {}).get("display")
    return {
        "record_id": uuid.uuid5(_NAMESPACE, f"{message.organisation_id}:{message.sender}:{given['id']}:{when}"),
        "patient_id": patient.id, "prescription_id": prescription.id, "dose_amount": Decimal(str(dose["value"])),
        "dose_unit": str(dose.get("unit") or dose.get("code") or prescription.dose_unit)[:20],
        "route": str(route.get("display") or route.get("code") or prescription.route)[:30],
        "given_at": datetime.fromisoformat(when), "administered_by": str(performer or "HL7 RAS")[:200],
        "device_id": f"hl7:{message.sender}"[:100], "lot_id": None, "quantity": None, "notes": None,
        "side_effects": None,
    }


def record(session: Session, message: StoredMessage, resources: list[dict[str, Any]]) -> list[str]:
    """Receive an administration per completed MedicationAdministration; warnings for the rest."""
    patient_resource = next((r for r in resources if r["resourceType"] == "Patient"), None)
    patient = clinical_patient(session, message.organisation_id, patient_resource)
    warnings = []
    for given in (r for r in resources if r["resourceType"] == "MedicationAdministration"):
        if given.get("status") != "completed":
            continue
        prescription = _prescription(session, patient, given) if patient else None
        values = _record(message, given, patient, prescription) if patient and prescription else None
        if values is None:
            warnings.append(f"{given['id']}: not recorded as an administration (no matching patient, "
                            "prescription, dose or time)")
            continue
        try:
            with session.begin_nested():
                administrations.receive(session, values, organisation_id=message.organisation_id,
                                        api_client_id=None, request_id=f"hl7-{message.id}")
        except (clinical.InvalidReferenceError, clinical.DuplicateRecordError) as exc:
            warnings.append(f"{given['id']}: administration refused ({type(exc).__name__})")
    return warnings
