"""Medication safety rules: each looks at one aspect of a dose and says whether to block it.

The rules are pure: the administrations service loads what they need and acts on the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from app.models import Administration, Allergy, InventoryLot, Medication, Prescription

#: Allergy severity (as recorded) → safety event severity.
_ALLERGY_SEVERITY = {"life-threatening": "CRITICAL", "severe": "CRITICAL", "moderate": "HIGH", "mild": "MEDIUM"}
_RANK = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2}


@dataclass(frozen=True)
class Block:
    """A safety rule's verdict: what kind of event, how severe, and why (codes and ids, no names)."""

    event_type: str
    severity: str
    description: str
    context: dict[str, Any] = field(default_factory=dict)


def _fold(text: str) -> str:
    return " ".join(text.casefold().split())


def allergy_matches(allergy: Allergy, medication: Medication) -> bool:
    """Same substance code as the medication, or its substance named as the medication or an ingredient."""
    if allergy.substance_code and allergy.substance_code == medication.code:
        return True
    substance = _fold(allergy.substance_name)
    names = {_fold(medication.name), *(_fold(i) for i in medication.ingredients or [])}
    return substance in names or substance in _fold(medication.name).split()


def allergy_block(allergies: Iterable[Allergy], medication: Medication) -> Block | None:
    """Block a medication the patient is allergic to, at the severity of the worst matching allergy."""
    matches = [a for a in allergies if allergy_matches(a, medication)]
    if not matches:
        return None
    worst = min(matches, key=lambda a: _RANK[_ALLERGY_SEVERITY[a.severity]])
    severity = _ALLERGY_SEVERITY[worst.severity]
    return Block("ALLERGY_BLOCKED", severity, f"Patient has a {worst.severity} allergy to this medication.",
                 {"allergy_ids": [a.id for a in matches], "medication_id": medication.id,
                  "allergy_severity": worst.severity})


def dose_block(given: Decimal, unit: str, prescription: Prescription, tolerance: float) -> Block | None:
    """Block a dose in another unit, or further than `tolerance` (a fraction) from the prescribed dose."""
    context = {"prescribed": str(prescription.dose_amount), "prescribed_unit": prescription.dose_unit,
               "given": str(given), "given_unit": unit, "tolerance": tolerance}
    if _fold(unit) != _fold(prescription.dose_unit):
        return Block("WRONG_DOSE_BLOCKED", "HIGH", "Dose unit differs from the prescription.", context)
    prescribed = Decimal(prescription.dose_amount)
    if abs(given - prescribed) <= prescribed * Decimal(str(tolerance)):
        return None
    if given > prescribed:
        severity = "CRITICAL" if given >= 2 * prescribed else "HIGH"
        return Block("WRONG_DOSE_BLOCKED", severity, "Dose is above the prescribed dose.", context)
    return Block("WRONG_DOSE_BLOCKED", "MEDIUM", "Dose is below the prescribed dose.", context)


def duplicate_window(prescription: Prescription, default_minutes: int) -> timedelta:
    """How close two doses of one prescription may be before the second is a duplicate."""
    return timedelta(minutes=prescription.duplicate_window_minutes or default_minutes)


def duplicate_block(previous: Administration | None, given_at: datetime, window: timedelta) -> Block | None:
    """Block a dose when another dose of the same prescription is recorded within the window."""
    if previous is None:
        return None
    gap = abs(given_at - previous.given_at)
    return Block("DUPLICATE_PREVENTED", "HIGH", "Another dose of this prescription is already recorded "
                 f"{int(gap.total_seconds() // 60)} min away (window {int(window.total_seconds() // 60)} min).",
                 {"recorded_administration_id": previous.id, "window_minutes": int(window.total_seconds() // 60)})


def expired_lot_block(lot: InventoryLot, given_at: datetime) -> Block | None:
    """Block a dose drawn from a lot that had expired by the day it was given."""
    if lot.expires_on >= given_at.date():
        return None
    return Block("EXPIRED_LOT_BLOCKED", "HIGH", f"Lot expired on {lot.expires_on.isoformat()}.",
                 {"lot_id": lot.id, "expires_on": lot.expires_on.isoformat()})


def stock_quantity(administration: Administration, medication: Medication) -> Decimal:
    """Units drawn from stock: as reported, else dose ÷ strength when in the strength's unit, else 1."""
    if administration.quantity is not None:
        return Decimal(administration.quantity)
    if medication.strength and _fold(administration.dose_unit) == _fold(medication.unit):
        return Decimal(administration.dose_amount) / Decimal(medication.strength)
    return Decimal(1)
