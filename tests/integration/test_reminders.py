"""Reminders and inventory maintenance: announced once (even by concurrent runs), never for doses given."""

from __future__ import annotations

import threading
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import insert, select, update

from app.models import Administration, Alert, Event, FhirResource, InventoryLot, Medication, Prescription
from app.runtime import Runtime
from app.services import reminders
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


def test_upcoming_appointments(clean: Runtime, org_id: int) -> None:
    start = (NOW + timedelta(hours=3)).isoformat()
    with clean.sessions.begin() as session:
        for rid, when in (("soon", start), ("later", (NOW + timedelta(days=3)).isoformat())):
            session.add(FhirResource(organisation_id=org_id, resource_type="Appointment", id=rid,
                                     resource={"resourceType": "Appointment", "id": rid, "status": "booked",
                                               "start": when, "participant": []}))
    for _ in range(2):
        with clean.sessions.begin() as session:
            reminders.appointments(session, NOW)
    with clean.sessions() as session:
        found = session.scalars(select(Event).where(Event.type == "reminder.appointment_upcoming")).all()
    assert [e.payload["appointment_id"] for e in found] == ["soon"]


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

