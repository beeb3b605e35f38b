"""Reminders and inventory maintenance: announced once (even by concurrent runs), never for doses given."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, update

from app.models import (
    Administration,
    Alert,
    Appointment,
    Event,
    InventoryLot,
    Medication,
    Organisation,
    Prescription,
)
from app.runtime import Runtime
from app.services import clinical, reminders
from tests.support.clinic import GIVEN_AT, Clinic, seed_clinic

#: 09:40 UTC on the clinic's day: the 08:00 dose is missed, the 10:00 dose is due within 30 min.
NOW = GIVEN_AT.replace(hour=9, minute=40)


@pytest.fixture()
def clinic(clean: Runtime, org_id: int) -> Clinic:
    with clean.sessions.begin() as session:
        made = seed_clinic(session, org_id)
        session.execute(update(Medication).values(critical=True))
        return made


def run(runtime: Runtime, now: datetime = NOW) -> reminders.Found:
    with runtime.sessions.begin() as session:
        return reminders.medication(session, now, reminders.Windows(ahead=timedelta(minutes=30), lookback=timedelta(hours=2)))


def kinds(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.sessions() as session:
        return sorted((e.type, e.payload["scheduled_at"]) for e in session.scalars(
            select(Event).where(Event.type.like("reminder.%"))))


def test_due_and_missed_doses_are_announced_once(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:  # the clinic's schedule is 08:00, 14:00, 20:00: add 10:00
        session.execute(update(Prescription).values(times_of_day=["08:00", "10:00", "14:00", "20:00"]))
    first = run(clean)
    assert (first.due, first.missed) == (1, 1)
    assert run(clean) == reminders.Found(0, 0)  # a rerun announces nothing new
    day = NOW.date().isoformat()
    assert kinds(clean) == [("reminder.medication_due", f"{day}T10:00:00+00:00"),
                            ("reminder.medication_missed", f"{day}T08:00:00+00:00")]


def test_no_reminder_for_a_dose_already_given(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:
        session.execute(insert(Administration).values(
            organisation_id=clinic.organisation_id, record_id=uuid.uuid4(), content_hash="x",
            patient_id=clinic.patient_id, prescription_id=clinic.prescription_id, dose_amount=500, dose_unit="mg",
            route="oral", given_at=GIVEN_AT + timedelta(minutes=12), status="recorded", administered_by="N",
            device_id="d"))
    assert run(clean) == reminders.Found(0, 0)


def test_concurrent_generators_announce_each_reminder_once(clean: Runtime, clinic: Clinic) -> None:
    barrier = threading.Barrier(3)

    def generate() -> None:
        barrier.wait()
        run(clean)

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(kinds(clean)) == 1  # the 08:00 dose, missed


def test_a_missed_critical_dose_raises_a_critical_alert(clean: Runtime, clinic: Clinic) -> None:
    run(clean)
    run(clean)
    with clean.sessions() as session:
        [alert] = session.scalars(select(Alert)).all()
    assert (alert.condition, alert.severity) == ("critical_dose_missed", "critical")


def test_upcoming_appointments_once_each_and_again_when_rescheduled(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:
        made = {name: clinical.create(session, Appointment, {"patient_id": clinic.patient_id, "start": NOW + ahead,
                                                             "status": status}, organisation_id=clinic.organisation_id).id
                for name, ahead, status in (("soon", timedelta(hours=3), "booked"), ("later", timedelta(days=3), "booked"),
                                            ("cancelled", timedelta(hours=2), "cancelled"))}
    for _ in range(2):
        with clean.sessions.begin() as session:
            reminders.appointments(session, NOW)
    with clean.sessions.begin() as session:  # moved an hour later: its new start is announced too
        clinical.update(session, Appointment, made["soon"], {"start": NOW + timedelta(hours=4)},
                        organisation_id=clinic.organisation_id)
        reminders.appointments(session, NOW)
    with clean.sessions() as session:
        found = session.scalars(select(Event).where(Event.type == "reminder.appointment_upcoming")
                                .order_by(Event.id)).all()
    assert [(e.payload["appointment_id"], e.payload["start"]) for e in found] == [
        (made["soon"], (NOW + timedelta(hours=3)).isoformat()), (made["soon"], (NOW + timedelta(hours=4)).isoformat())]


def test_times_of_day_are_local_to_the_organisation(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:  # New York is UTC-5 in November: 08:00 local is 13:00 UTC
        session.execute(update(Organisation).values(timezone="America/New_York"))
        session.execute(update(Prescription).values(times_of_day=["08:00"]))
    assert run(clean, NOW.replace(hour=12, minute=40)) == reminders.Found(1, 0)
    assert kinds(clean) == [("reminder.medication_due", "2026-11-30T13:00:00+00:00")]


def test_dst_change_keeps_the_local_time(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:
        prescription = session.get(Prescription, clinic.prescription_id)
        assert prescription is not None
        prescription.times_of_day, prescription.start_date = ["08:00"], date(2026, 3, 1)
        zone = ZoneInfo("Europe/Berlin")
        summer = reminders.scheduled_times(prescription, datetime(2026, 3, 28, tzinfo=UTC),
                                           datetime(2026, 3, 30, tzinfo=UTC), zone)
    assert [w.astimezone(zone).hour for w in summer] == [8, 8]  # across the switch to summer time
    assert [w.hour for w in summer] == [7, 6]  # 08:00 CET is 07:00 UTC, 08:00 CEST is 06:00 UTC


def test_interval_prescriptions_are_due_every_so_many_hours(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:
        session.execute(update(Prescription).values(times_of_day=[], interval_hours=2))
    found = run(clean, NOW.replace(hour=11, minute=35))  # doses at 00:00, 02:00 … 22:00 UTC
    assert found == reminders.Found(1, 1)  # 12:00 due; 10:00 missed (earlier ones are outside the 2 h lookback)
    assert kinds(clean) == [("reminder.medication_due", "2026-11-30T12:00:00+00:00"),
                            ("reminder.medication_missed", "2026-11-30T10:00:00+00:00")]


def test_daily_digests_at_local_midnight_and_six_once_each(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:  # Tokyo is UTC+9: local 06:00 on Dec 1 is 21:00 UTC on Nov 30
        session.execute(update(Organisation).values(timezone="Asia/Tokyo"))
        session.execute(update(Prescription).values(times_of_day=["08:00", "12:00", "20:00"]))

    def digest(now: datetime) -> int:
        with clean.sessions.begin() as session:
            return reminders.digests(session, now)

    assert digest(datetime(2026, 11, 30, 20, 0, tzinfo=UTC)) == 0  # 05:00 local: the midnight slot is 5 h old
    assert digest(datetime(2026, 11, 30, 21, 10, tzinfo=UTC)) == 1  # 06:10 local
    assert digest(datetime(2026, 11, 30, 21, 40, tzinfo=UTC)) == 0  # the same slot again
    with clean.sessions() as session:
        event = session.scalars(select(Event).where(Event.type == "reminder.medication_digest")).one()
    assert event.payload["slot"] == "2026-12-01T06:00:00+09:00"
    assert event.payload["doses_due"] == 3 and event.payload["truncated"] is False
    assert event.payload["due"][0] == {"prescription_id": clinic.prescription_id, "patient_id": clinic.patient_id,
                                       "scheduled_at": "2026-11-30T23:00:00+00:00"}
    assert event.payload["doses_missed"] == 3  # 08:00, 12:00 and 20:00 local on Nov 30, the 24 h before


def test_a_time_zone_change_does_not_send_a_days_digest_twice(clean: Runtime, clinic: Clinic) -> None:
    def digest(now: datetime, zone: str) -> int:
        with clean.sessions.begin() as session:
            session.execute(update(Organisation).values(timezone=zone))
            return reminders.digests(session, now)

    assert digest(datetime(2026, 12, 1, 6, 30, tzinfo=UTC), "UTC") == 1  # 06:30 in UTC: the 06:00 digest
    assert digest(datetime(2026, 12, 1, 7, 0, tzinfo=UTC), "Europe/Berlin") == 0  # 08:00 there: 06:00 was sent
    assert digest(datetime(2026, 12, 1, 23, 30, tzinfo=UTC), "Europe/Berlin") == 1  # 00:30 on Dec 2: a new slot


def test_inventory_low_and_expiring_once_a_day_with_an_alert_that_resolves(clean: Runtime, clinic: Clinic) -> None:
    today = date(2026, 11, 30)
    with clean.sessions.begin() as session:
        session.execute(update(InventoryLot).where(InventoryLot.id == clinic.lot_id).values(quantity=Decimal(5)))
    for _ in range(2):
        with clean.sessions.begin() as session:
            reminders.inventory(session, today, 30)
    with clean.sessions() as session:
        types = sorted(e.type for e in session.scalars(select(Event).where(Event.type.like("inventory.%"))))
        assert types == ["inventory.expiring", "inventory.low_stock"]  # the expired lot still has stock
        assert session.scalars(select(Alert.status)).all() == ["triggered"]
    with clean.sessions.begin() as session:
        session.execute(update(InventoryLot).where(InventoryLot.id == clinic.lot_id).values(quantity=Decimal(50)))
        reminders.inventory(session, today + timedelta(days=1), 30)
    with clean.sessions() as session:
        assert session.scalars(select(Alert.status)).all() == ["resolved"]

