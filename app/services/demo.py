"""`triage demo seed`: a believable school-health organisation to try the API against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Allergy, InventoryLot, Medication, Patient, Prescription
from app.services.clinical import create
from app.services.organisations import ensure_organisation

_STUDENTS = (
    ("S-1001", "Maya", "Okafor", date(2013, 4, 12)),
    ("S-1002", "Liam", "Nguyen", date(2012, 9, 3)),
    ("S-1003", "Sofia", "Haddad", date(2014, 1, 27)),
    ("S-1004", "Noah", "Kowalski", date(2011, 11, 8)),
)
#: name, RxNorm code, form, strength, unit, ingredients
_FORMULARY = (
    ("Methylphenidate 10 mg tablet", "1091170", "tablet", 10, "mg", ["methylphenidate"]),
    ("Albuterol 90 mcg inhaler", "745679", "inhaler", 90, "mcg", ["albuterol"]),
    ("Amoxicillin 250 mg capsule", "308182", "capsule", 250, "mg", ["amoxicillin", "penicillin"]),
    ("Cetirizine 5 mg tablet", "1014678", "tablet", 5, "mg", ["cetirizine"]),
    ("Epinephrine 0.15 mg auto-injector", "1870225", "auto-injector", Decimal("0.15"), "mg", ["epinephrine"]),
)


@dataclass(frozen=True)
class DemoOrganisation:
    """What the seed created: the organisation and how many of each."""

    organisation_id: int
    counts: dict[str, int]


def seed(session: Session, *, name: str = "Demo School District", today: date | None = None) -> DemoOrganisation:
    """Create (once) an organisation with students, allergies, a formulary, prescriptions and stock."""
    today = today or date.today()
    org_id = ensure_organisation(session, name).id
    if session.scalar(select(Patient.id).where(Patient.organisation_id == org_id).limit(1)) is not None:
        return DemoOrganisation(org_id, {})  # already seeded: a second run changes nothing
    add = _adder(session, org_id)
    students = [add(Patient, student_number=n, given_name=g, family_name=f, date_of_birth=d)
                for n, g, f, d in _STUDENTS]
    meds = [add(Medication, name=n, code=c, form=fm, strength=Decimal(s), unit=u, ingredients=i)
            for n, c, fm, s, u, i in _FORMULARY]
    add(Allergy, patient_id=students[1].id, substance_name="Penicillin", substance_code="7980",
        reaction="hives", severity="moderate")
    add(Allergy, patient_id=students[3].id, substance_name="Peanut", reaction="anaphylaxis",
        severity="life-threatening")
    start = today - timedelta(days=30)
    schedule: list[dict[str, Any]] = [
        {"patient_id": students[0].id, "medication_id": meds[0].id, "dose_amount": 10, "times_of_day": ["12:00"]},
        {"patient_id": students[1].id, "medication_id": meds[1].id, "dose_amount": 180, "prn": True},
        {"patient_id": students[2].id, "medication_id": meds[2].id, "dose_amount": 250, "interval_hours": 8},
        {"patient_id": students[2].id, "medication_id": meds[3].id, "dose_amount": 5, "times_of_day": ["08:30"]},
        {"patient_id": students[3].id, "medication_id": meds[4].id, "dose_amount": Decimal("0.15"), "prn": True},
    ]
    for entry in schedule:
        unit = next(m.unit for m in meds if m.id == entry["medication_id"])
        route = "inhalation" if unit == "mcg" else "oral"
        add(Prescription, dose_unit=unit, route=route, start_date=start, prescriber="Dr. R. Alvarez", **entry)
    for i, med in enumerate(meds):
        add(InventoryLot, medication_id=med.id, lot_number=f"LOT-{2026}{i:02d}A", quantity=Decimal(60),
            expires_on=today + timedelta(days=180), reorder_level=Decimal(10))
    add(InventoryLot, medication_id=meds[3].id, lot_number="LOT-2025-OLD", quantity=Decimal(12),
        expires_on=today - timedelta(days=14), reorder_level=Decimal(0))
    counts = {"patients": len(students), "medications": len(meds), "allergies": 2,
              "prescriptions": len(schedule), "inventory_lots": len(meds) + 1}
    return DemoOrganisation(org_id, counts)


def _adder(session: Session, organisation_id: int) -> Any:
    def add(model: type[Any], **values: Any) -> Any:
        return create(session, model, values, organisation_id=organisation_id)

    return add
