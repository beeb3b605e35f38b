"""Immunization compliance: each patient's doses against the organisation's requirements.

Dose 1 of a requirement falls due at `first_dose_age_days` of age; each later dose
`interval_days` after the dose before it (after the day it was given, or — while that dose is
missing — after the day it fell due). A dose not received `grace_days` after it fell due is
overdue. An exemption that has not expired waives the whole requirement. Overdue doses are
announced once each as `reminder.immunization_overdue` (natural key: patient, requirement, dose).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.models import Immunization, ImmunizationExemption, ImmunizationRequirement, Patient
from app.services import events


@dataclass(frozen=True)
class Standing:
    """One patient against one requirement on a given day."""

    requirement: ImmunizationRequirement
    received: int
    exempt: str | None  # the exemption's reason
    overdue: tuple[tuple[int, date], ...]  # (dose number, the day it fell due)
    next_due: date | None  # the first dose not yet received


def standing(requirement: ImmunizationRequirement, date_of_birth: date, given: Iterable[date],
             exempt: str | None, today: date) -> Standing:
    """Which doses of `requirement` are received, overdue and next due for a patient born on `date_of_birth`."""
    days = sorted(given)
    due = date_of_birth + timedelta(days=requirement.first_dose_age_days)
    overdue: list[tuple[int, date]] = []
    next_due = None
    for number in range(1, requirement.doses + 1):
        if number <= len(days):
            due = max(due, days[number - 1]) + timedelta(days=requirement.interval_days)
            continue
        next_due = next_due or due
        if exempt is None and due + timedelta(days=requirement.grace_days) < today:
            overdue.append((number, due))
        due += timedelta(days=requirement.interval_days)
    return Standing(requirement, min(len(days), requirement.doses), exempt, tuple(overdue), next_due)


def requirements(session: Session, organisation_id: int) -> list[ImmunizationRequirement]:
    """The organisation's active requirements, by vaccine."""
    return list(session.scalars(select(ImmunizationRequirement).where(
        ImmunizationRequirement.organisation_id == organisation_id, ImmunizationRequirement.active.is_(True))
        .order_by(ImmunizationRequirement.vaccine)))


def standings(session: Session, organisation_id: int, today: date,
              patient_ids: list[int] | None = None) -> dict[int, list[Standing]]:
    """Every patient's (or the given patients') standing against every active requirement."""
    required = requirements(session, organisation_id)
    patients = select(Patient.id, Patient.date_of_birth).where(Patient.organisation_id == organisation_id)
    if patient_ids is not None:
        patients = patients.where(Patient.id.in_(patient_ids))
    born: dict[int, date] = {patient_id: dob for patient_id, dob in session.execute(patients)}
    given = _doses(session, organisation_id, list(born))
    exempt = _exemptions(session, organisation_id, list(born), today)
    return {patient_id: [standing(r, dob, [d for code, d in given[patient_id] if code in r.codes],
                                  exempt.get((patient_id, r.id)), today) for r in required]
            for patient_id, dob in born.items()}


def _doses(session: Session, organisation_id: int, patient_ids: list[int]) -> dict[int, list[tuple[str, date]]]:
    rows = session.execute(select(Immunization.patient_id, Immunization.vaccine_code, Immunization.occurred_on).where(
        Immunization.organisation_id == organisation_id, Immunization.patient_id.in_(patient_ids),
        Immunization.status == "completed"))
    doses: dict[int, list[tuple[str, date]]] = defaultdict(list)
    for patient_id, code, day in rows:
        doses[patient_id].append((code, day))
    return doses


def _exemptions(session: Session, organisation_id: int, patient_ids: list[int],
                today: date) -> dict[tuple[int, int], str]:
    rows = session.execute(select(ImmunizationExemption.patient_id, ImmunizationExemption.requirement_id,
                                  ImmunizationExemption.reason).where(
        ImmunizationExemption.organisation_id == organisation_id, ImmunizationExemption.patient_id.in_(patient_ids),
        or_(ImmunizationExemption.expires_on.is_(None), ImmunizationExemption.expires_on >= today)))
    return {(patient_id, requirement_id): reason for patient_id, requirement_id, reason in rows}


def overdue(session: Session, organisation_id: int, today: date) -> int:
    """Announce every overdue dose not announced before; how many were new."""
    emissions = [
        events.Emission(organisation_id, "reminder.immunization_overdue", f"{patient_id}:{s.requirement.id}:{number}",
                        {"patient_id": patient_id, "requirement_id": s.requirement.id, "dose_number": number,
                         "due_on": due.isoformat()})  # ids only: which vaccine a child lacks is clinical
        for patient_id, found in standings(session, organisation_id, today).items()
        for s in found for number, due in s.overdue]
    return events.emit_many(session, emissions)
