"""A small clinic for administration tests: a patient with a prescription, stock, and a record builder."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from app.models import Allergy, InventoryLot, Medication, Patient, Prescription
from app.services.clinical import create

#: A fixed instant inside the prescription's dates, so tests do not depend on the clock.
GIVEN_AT = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Clinic:
    """Ids of one organisation's patient, medication (500 mg tablets), prescription and lots."""

    organisation_id: int
    patient_id: int
    medication_id: int
    prescription_id: int
    lot_id: int
    expired_lot_id: int

    def record(self, **overrides: Any) -> dict[str, Any]:
        """A valid administration record as a device would send it (JSON-ready)."""
        record: dict[str, Any] = {
            "record_id": str(uuid.uuid4()),
            "patient_id": self.patient_id,
            "prescription_id": self.prescription_id,
            "dose_amount": 500,
            "dose_unit": "mg",
            "route": "oral",
            "given_at": GIVEN_AT.isoformat(),
            "administered_by": "Nurse Example",
            "device_id": "tablet-7",
            "lot_id": self.lot_id,
        }
        record.update(overrides)
        return record


def seed_clinic(session: Session, organisation_id: int, *, stock: int = 100) -> Clinic:
    """Create the clinic's rows in `session` (the caller commits)."""
    org = {"organisation_id": organisation_id}
    patient = create(session, Patient, {"mrn": f"MRN-{uuid.uuid4().hex[:8]}", "given_name": "Test",
                                        "family_name": "Patient", "date_of_birth": date(2012, 5, 1)}, **org)
    medication = create(session, Medication, {"name": "Amoxicillin", "code": "723", "form": "tablet",
                                              "strength": Decimal(500), "unit": "mg",
                                              "ingredients": ["amoxicillin", "penicillin"]}, **org)
    prescription = create(session, Prescription, {
        "patient_id": patient.id, "medication_id": medication.id, "dose_amount": Decimal(500), "dose_unit": "mg",
        "route": "oral", "times_of_day": ["08:00", "14:00", "20:00"], "start_date": date(2026, 11, 1),
        "end_date": date(2026, 12, 31), "prescriber": "Dr Example"}, **org)
    lot = create(session, InventoryLot, {"medication_id": medication.id, "lot_number": "L-GOOD",
                                         "quantity": Decimal(stock), "expires_on": date(2027, 6, 30),
                                         "reorder_level": Decimal(10)}, **org)
    expired = create(session, InventoryLot, {"medication_id": medication.id, "lot_number": "L-OLD",
                                             "quantity": Decimal(stock), "expires_on": GIVEN_AT.date()
                                             - timedelta(days=1)}, **org)
    return Clinic(organisation_id, patient.id, medication.id, prescription.id, lot.id, expired.id)


def add_allergy(session: Session, clinic: Clinic, substance: str, severity: str, code: str | None = None) -> None:
    """Record an allergy of the clinic's patient."""
    create(session, Allergy, {"patient_id": clinic.patient_id, "substance_name": substance, "substance_code": code,
                              "severity": severity}, organisation_id=clinic.organisation_id)
