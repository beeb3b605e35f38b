"""Reminders and inventory maintenance: conditions found on a schedule, announced once as events.

Every reminder is an event whose dedupe key is its natural key (prescription + scheduled time,
appointment + start, lot + day), so regenerating, rerunning or two generators at once never
announce one twice. Schedules (times of day) are read in UTC: organisations have no time zone yet.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.models import Administration, FhirResource, InventoryLot, Medication, Prescription
from app.services import alerts, events

#: Administrations that count as "given" for a scheduled dose.
_GIVEN = ("received", "recorded")


@dataclass(frozen=True)
class Windows:
    """How far ahead a dose is "due", how late it may be before "missed", how far back to look."""

    ahead: timedelta = timedelta(minutes=30)
    grace: timedelta = timedelta(minutes=60)
    lookback: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class Found:
    """How many reminders of each kind a pass announced (new ones only)."""

    due: int = 0
    missed: int = 0


def scheduled_times(prescription: Prescription, start: datetime, end: datetime) -> list[datetime]:
    """The prescription's doses (times of day, UTC) in [start, end), within its start and end dates."""
    found = []
    day = start.date()
    while day <= end.date():
        if prescription.start_date <= day and (prescription.end_date is None or day <= prescription.end_date):
            for slot in prescription.times_of_day:
                when = datetime.combine(day, time.fromisoformat(slot), tzinfo=UTC)
                if start <= when < end:
                    found.append(when)
        day += timedelta(days=1)
    return found


def _given(session: Session, ids: list[int], start: datetime, end: datetime) -> dict[int, list[datetime]]:
    rows = session.execute(select(Administration.prescription_id, Administration.given_at).where(
        Administration.prescription_id.in_(ids), Administration.status.in_(_GIVEN),
        Administration.given_at >= start, Administration.given_at < end))
    given: dict[int, list[datetime]] = defaultdict(list)
    for prescription_id, given_at in rows:
        given[prescription_id].append(given_at)
    return given


def medication(session: Session, now: datetime, windows: Windows = Windows()) -> Found:
    """`reminder.medication_due` for doses in the next window not yet given; `reminder.medication_missed`
    (and an alert for critical medications) for doses past the grace period that were never given."""
    start, end = now - windows.lookback, now + windows.ahead
    rows = session.execute(select(Prescription, Medication.critical).join(Medication).where(
        Prescription.active.is_(True), Prescription.prn.is_(False), Prescription.start_date <= end.date(),
        or_(Prescription.end_date.is_(None), Prescription.end_date >= start.date()))).all()
    given = _given(session, [p.id for p, _ in rows], start - windows.grace, end + windows.grace)
    due: list[events.Emission] = []
    missed: list[events.Emission] = []
    for prescription, critical in rows:
        for when in scheduled_times(prescription, start, end):
            if any(abs(g - when) <= windows.grace for g in given.get(prescription.id, ())):
                continue
            if when >= now:
                due.append(_reminder(prescription, "reminder.medication_due", when))
            elif when <= now - windows.grace:
                missed.append(_reminder(prescription, "reminder.medication_missed", when))
                if critical:
                    _critical_missed(session, prescription, when)
    return Found(events.emit_many(session, due), events.emit_many(session, missed))


def _reminder(prescription: Prescription, kind: str, when: datetime) -> events.Emission:
    return events.Emission(prescription.organisation_id, kind, f"{prescription.id}:{when.isoformat()}",
                           {"prescription_id": prescription.id, "patient_id": prescription.patient_id,
                            "scheduled_at": when.isoformat()})


def _critical_missed(session: Session, prescription: Prescription, when: datetime) -> None:
    alerts.trigger(session, alerts.Condition(
        prescription.organisation_id, "critical_dose_missed", f"{prescription.id}:{when:%Y%m%dT%H%M}", "critical",
        f"A scheduled dose of a critical medication was not given (prescription {prescription.id}, due "
        f"{when:%Y-%m-%d %H:%M} UTC).", {"prescription_id": prescription.id, "scheduled_at": when.isoformat()}))


def appointments(session: Session, now: datetime, ahead: timedelta = timedelta(hours=24)) -> int:
    """`reminder.appointment_upcoming` for booked appointments (from SIU) starting within `ahead`."""
    count = 0
    rows = session.scalars(select(FhirResource).where(FhirResource.resource_type == "Appointment",
                                                      FhirResource.resource["status"].astext == "booked"))
    for row in rows:
        start = row.resource.get("start")
        if not start or not (now <= datetime.fromisoformat(start) <= now + ahead):
            continue
        emitted = events.emit(session, organisation_id=row.organisation_id, type="reminder.appointment_upcoming",
                              subject=f"{row.id}:{start}", payload={"appointment_id": row.id, "start": start})
        count += emitted is not None
    return count


def inventory(session: Session, today: date, expiring_within_days: int) -> tuple[int, int]:
    """`inventory.low_stock` (and an alert) for lots at or below their reorder level, `inventory.expiring`
    for lots with stock that expire soon; once per lot per day. Alerts resolve when stock is back."""
    low = expiring = 0
    for lot in session.scalars(select(InventoryLot)):
        condition = alerts.Condition(lot.organisation_id, "low_stock", str(lot.id), "warning",
                                     f"Inventory lot {lot.id} is at or below its reorder level.",
                                     {"lot_id": lot.id, "medication_id": lot.medication_id})
        if lot.quantity <= lot.reorder_level:
            low += events.emit(session, organisation_id=lot.organisation_id, type="inventory.low_stock",
                               subject=f"{lot.id}:{today}", payload={"lot_id": lot.id,
                                                                    "medication_id": lot.medication_id}) is not None
            alerts.trigger(session, condition)
        elif alerts.is_open(session, lot.organisation_id, "low_stock", str(lot.id)):
            alerts.resolve(session, lot.organisation_id, "low_stock", str(lot.id))
        if lot.quantity > 0 and lot.expires_on <= today + timedelta(days=expiring_within_days):
            expiring += events.emit(session, organisation_id=lot.organisation_id, type="inventory.expiring",
                                    subject=f"{lot.id}:{today}", payload={
                                        "lot_id": lot.id, "medication_id": lot.medication_id,
                                        "expires_on": lot.expires_on.isoformat()}) is not None
    return low, expiring
