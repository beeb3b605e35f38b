"""Reminders and inventory maintenance: conditions found on a schedule, announced once as events.

Every reminder is an event whose dedupe key is its natural key (prescription + scheduled time,
appointment + start, lot + day, organisation + digest slot), so regenerating, rerunning or two
generators at once never announce one twice. A prescription's times of day are wall-clock times
in its organisation's time zone (DST included); a prescription with `interval_hours` and no times
of day is due every so many hours from local midnight of its start date.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.models import Administration, Appointment, InventoryLot, Medication, Organisation, Prescription
from app.services import alerts, events

#: Administrations that count as "given" for a scheduled dose.
_GIVEN = ("received", "recorded")
_UTC = ZoneInfo("UTC")
#: Local times of the daily medication digests, and how late one may still go out.
DIGEST_SLOTS = (time(0, 0), time(6, 0))
DIGEST_LATE = timedelta(hours=2)
DIGEST_MAX_DOSES = 500  # doses listed in one digest (all are counted)


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


def scheduled_times(prescription: Prescription, start: datetime, end: datetime, zone: ZoneInfo = _UTC
                    ) -> list[datetime]:
    """The prescription's doses (UTC) in [start, end), within its start and end dates (local days)."""
    if not prescription.times_of_day:
        return _every(prescription, start, end, zone)
    found = []
    day = start.astimezone(zone).date() - timedelta(days=1)
    while day <= end.astimezone(zone).date():
        if prescription.start_date <= day and (prescription.end_date is None or day <= prescription.end_date):
            for slot in prescription.times_of_day:
                when = datetime.combine(day, time.fromisoformat(slot), tzinfo=zone).astimezone(UTC)
                if start <= when < end:
                    found.append(when)
        day += timedelta(days=1)
    return found


def _every(prescription: Prescription, start: datetime, end: datetime, zone: ZoneInfo) -> list[datetime]:
    """Doses every `interval_hours` from local midnight of the start date, until the end date."""
    if not prescription.interval_hours:
        return []
    step = timedelta(hours=prescription.interval_hours)
    first = datetime.combine(prescription.start_date, time.min, tzinfo=zone).astimezone(UTC)
    last = (datetime.combine(prescription.end_date + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
            if prescription.end_date else end)
    when = first + step * max(0, -(-(start - first) // step))
    found = []
    while when < min(end, last):
        found.append(when)
        when += step
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
    rows = _prescriptions(session, start, end)
    given = _given(session, [p.id for p, _, _ in rows], start - windows.grace, end + windows.grace)
    due: list[events.Emission] = []
    missed: list[events.Emission] = []
    for prescription, critical, zone in rows:
        for when in scheduled_times(prescription, start, end, zone):
            if any(abs(g - when) <= windows.grace for g in given.get(prescription.id, ())):
                continue
            if when >= now:
                due.append(_reminder(prescription, "reminder.medication_due", when))
            elif when <= now - windows.grace:
                missed.append(_reminder(prescription, "reminder.medication_missed", when))
                if critical:
                    _critical_missed(session, prescription, when)
    return Found(events.emit_many(session, due), events.emit_many(session, missed))


def _last_slot(now: datetime, zone: ZoneInfo) -> datetime:
    """The latest digest slot (local 00:00 or 06:00) at or before `now`."""
    local = now.astimezone(zone).date()
    return max(when for day in (local - timedelta(days=1), local) for slot in DIGEST_SLOTS
               if (when := datetime.combine(day, slot, tzinfo=zone).astimezone(UTC)) <= now)


def digests(session: Session, now: datetime, windows: Windows = Windows()) -> int:
    """`reminder.medication_digest` at 00:00 and 06:00 of each organisation's local day: the doses still
    due until local midnight and how many were missed in the 24 h before; once per slot, up to two
    hours late (a digest later than that is not worth sending)."""
    emissions = []
    for organisation_id, name in session.execute(select(Organisation.id, Organisation.timezone)):
        zone = ZoneInfo(name)
        slot = _last_slot(now, zone)
        if now - slot > DIGEST_LATE:
            continue
        start = slot - timedelta(hours=24)
        end = datetime.combine(slot.astimezone(zone).date() + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
        rows = _prescriptions(session, start, end, organisation_id)
        given = _given(session, [p.id for p, _, _ in rows], start - windows.grace, end + windows.grace)
        due, missed = [], 0
        for prescription, _, _ in rows:
            for when in scheduled_times(prescription, start, end, zone):
                if any(abs(g - when) <= windows.grace for g in given.get(prescription.id, ())):
                    continue
                if when >= slot:
                    due.append({"prescription_id": prescription.id, "patient_id": prescription.patient_id,
                                "scheduled_at": when.isoformat()})
                elif when <= slot - windows.grace:
                    missed += 1
        # Keyed by the local wall slot, not the instant: a time-zone change later that day names
        # the same slot at another instant, and must not send its digest again.
        local = slot.astimezone(zone).replace(tzinfo=None).isoformat(timespec="minutes")
        emissions.append(events.Emission(organisation_id, "reminder.medication_digest", f"{organisation_id}:{local}",
                                         {"slot": slot.astimezone(zone).isoformat(), "timezone": name,
                                          "doses_due": len(due), "doses_missed": missed,
                                          "due": due[:DIGEST_MAX_DOSES], "truncated": len(due) > DIGEST_MAX_DOSES}))
    return events.emit_many(session, emissions)


def _prescriptions(session: Session, start: datetime, end: datetime,
                   organisation_id: int | None = None) -> list[tuple[Prescription, bool, ZoneInfo]]:
    """Active scheduled prescriptions that may have doses in [start, end), with criticality and time zone."""
    query = select(Prescription, Medication.critical, Organisation.timezone).select_from(Prescription).join(
        Medication, Medication.id == Prescription.medication_id).join(
        Organisation, Organisation.id == Prescription.organisation_id).where(
        Prescription.active.is_(True), Prescription.prn.is_(False),
        Prescription.start_date <= (end + timedelta(days=1)).date(),
        or_(Prescription.end_date.is_(None), Prescription.end_date >= (start - timedelta(days=1)).date()))
    if organisation_id is not None:
        query = query.where(Prescription.organisation_id == organisation_id)
    zones: dict[str, ZoneInfo] = {}
    return [(p, critical, zones.setdefault(name, ZoneInfo(name))) for p, critical, name in session.execute(query)]


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
    """`reminder.appointment_upcoming` for booked appointments (API or SIU) starting within `ahead`;
    a rescheduled appointment is announced again for its new start."""
    rows = session.scalars(select(Appointment).where(Appointment.status == "booked", Appointment.start >= now,
                                                     Appointment.start <= now + ahead))
    return events.emit_many(session, [events.Emission(
        row.organisation_id, "reminder.appointment_upcoming", f"{row.id}:{row.start.isoformat()}",
        {"appointment_id": row.id, "patient_id": row.patient_id, "start": row.start.isoformat()}) for row in rows])


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
