"""The administration job's safety rules, stock and events, decided against real PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.api.administration_schemas import AdministrationIn
from app.models import Administration, Event, InventoryLot, Prescription, SafetyEvent
from app.runtime import Runtime
from app.services.administrations import Decision, decide, receive
from tests.support.clinic import Clinic, add_allergy, seed_clinic


@pytest.fixture()
def clinic(clean: Runtime, org_id: int) -> Clinic:
    with clean.sessions.begin() as session:
        return seed_clinic(session, org_id)


def arrive(runtime: Runtime, clinic: Clinic, **overrides: Any) -> int:
    """Receive a record as the API would; return its administration id."""
    record = AdministrationIn.model_validate(clinic.record(**overrides)).model_dump()
    with runtime.sessions.begin() as session:
        received = receive(session, record, organisation_id=clinic.organisation_id, api_client_id=None,
                           request_id=None)
        return received.administration.id


def run(runtime: Runtime, administration_id: int) -> Decision:
    """Decide a received administration, as its job does."""
    with runtime.sessions.begin() as session:
        return decide(session, administration_id, tolerance=0.05, window_minutes=60)


def given(runtime: Runtime, clinic: Clinic, **overrides: Any) -> tuple[Decision, Administration]:
    adm_id = arrive(runtime, clinic, **overrides)
    decision = run(runtime, adm_id)
    with runtime.sessions() as session:
        return decision, session.get_one(Administration, adm_id)


def stock(runtime: Runtime, lot_id: int) -> Decimal:
    with runtime.sessions() as session:
        return session.get_one(InventoryLot, lot_id).quantity


def events(runtime: Runtime, type_: str) -> list[Event]:
    with runtime.sessions() as session:
        return list(session.scalars(select(Event).where(Event.type == type_)))


def safety_event(runtime: Runtime, administration_id: int) -> SafetyEvent:
    with runtime.sessions() as session:
        return session.scalars(select(SafetyEvent).where(SafetyEvent.administration_id == administration_id)).one()


def test_a_valid_dose_is_recorded_with_stock_and_event_exactly_once(clean: Runtime, clinic: Clinic) -> None:
    decision, adm = given(clean, clinic)
    assert decision.status == adm.status == "recorded" and adm.decided_at is not None
    assert adm.quantity == 1  # 500 mg of 500 mg tablets
    assert stock(clean, clinic.lot_id) == 99
    again = run(clean, adm.id)  # the job ran twice (crash after commit, replay): no second effect
    assert again.already_decided and again.status == "recorded"
    assert stock(clean, clinic.lot_id) == 99
    recorded = events(clean, "administration.recorded")
    assert [e.payload["administration_id"] for e in recorded] == [adm.id]
    assert set(recorded[0].payload) == {"type", "administration_id", "record_id"}  # ids only: no PHI


@pytest.mark.parametrize(("allergy", "code", "severity"), [
    ("Penicillin", None, "CRITICAL"),  # an ingredient, recorded as severe
    ("amoxicillin", None, "CRITICAL"),  # the medication's own name
    ("Something else", "723", "CRITICAL"),  # the RxNorm code
])
def test_an_allergy_blocks_the_dose_and_leaves_stock_alone(clean: Runtime, clinic: Clinic, allergy: str,
                                                           code: str | None, severity: str) -> None:
    with clean.sessions.begin() as session:
        add_allergy(session, clinic, allergy, "severe", code=code)
    decision, adm = given(clean, clinic)
    assert (decision.status, adm.reason) == ("blocked", "allergy_blocked")
    event = safety_event(clean, adm.id)
    assert (event.event_type, event.severity) == ("ALLERGY_BLOCKED", severity)
    assert event.prevented_action["prescription_id"] == clinic.prescription_id
    assert stock(clean, clinic.lot_id) == 100
    alerts = events(clean, "safety.alert")
    assert [a.payload["safety_event_id"] for a in alerts] == [event.id]


def test_allergy_severity_maps_to_the_event_and_unrelated_allergies_do_not_block(clean: Runtime,
                                                                                 clinic: Clinic) -> None:
    with clean.sessions.begin() as session:
        add_allergy(session, clinic, "Peanut", "life-threatening")
        add_allergy(session, clinic, "penicillin", "mild")
    decision, adm = given(clean, clinic)
    assert decision.status == "blocked"
    assert safety_event(clean, adm.id).severity == "MEDIUM"  # only the mild penicillin allergy matches


@pytest.mark.parametrize(("dose", "unit", "status", "severity"), [
    (1000, "mg", "blocked", "CRITICAL"),  # double the dose
    (600, "mg", "blocked", "HIGH"),
    (250, "mg", "blocked", "MEDIUM"),
    (500, "mL", "blocked", "HIGH"),  # another unit
    (520, "mg", "recorded", None),  # within the 5 % tolerance
])
def test_a_dose_beyond_tolerance_is_blocked(clean: Runtime, clinic: Clinic, dose: int, unit: str, status: str,
                                            severity: str | None) -> None:
    decision, adm = given(clean, clinic, dose_amount=dose, dose_unit=unit, quantity=1)
    assert decision.status == status
    if severity:
        event = safety_event(clean, adm.id)
        assert (event.event_type, event.severity) == ("WRONG_DOSE_BLOCKED", severity)
        assert stock(clean, clinic.lot_id) == 100
    else:
        assert stock(clean, clinic.lot_id) == 99


def test_a_second_dose_within_the_window_is_a_duplicate_but_the_next_scheduled_one_is_not(
    clean: Runtime, clinic: Clinic,
) -> None:
    first, _ = given(clean, clinic)
    second, adm = given(clean, clinic, given_at="2026-11-30T08:40:00+00:00")
    later, _ = given(clean, clinic, given_at="2026-11-30T14:00:00+00:00")
    assert (first.status, second.status, later.status) == ("recorded", "blocked", "recorded")
    event = safety_event(clean, adm.id)
    assert (event.event_type, event.severity) == ("DUPLICATE_PREVENTED", "HIGH")
    assert stock(clean, clinic.lot_id) == 98


def test_the_prescription_can_set_its_own_duplicate_window(clean: Runtime, clinic: Clinic) -> None:
    with clean.sessions.begin() as session:
        session.execute(update(Prescription).values(duplicate_window_minutes=10))
    given(clean, clinic)
    second, _ = given(clean, clinic, given_at="2026-11-30T08:40:00+00:00")
    assert second.status == "recorded"


def test_two_doses_decided_at_once_record_only_one(clean: Runtime, clinic: Clinic) -> None:
    ids = [arrive(clean, clinic) for _ in range(2)]  # two devices, two record ids, the same dose
    with ThreadPoolExecutor(2) as pool:
        decisions = list(pool.map(lambda i: run(clean, i), ids))
    assert sorted(d.status for d in decisions) == ["blocked", "recorded"]
    assert stock(clean, clinic.lot_id) == 99


def test_an_expired_lot_is_blocked(clean: Runtime, clinic: Clinic) -> None:
    decision, adm = given(clean, clinic, lot_id=clinic.expired_lot_id)
    assert (decision.status, adm.reason) == ("blocked", "expired_lot_blocked")
    assert safety_event(clean, adm.id).event_type == "EXPIRED_LOT_BLOCKED"
    assert stock(clean, clinic.expired_lot_id) == 100


def test_invalid_doses_are_rejected_with_a_reason_and_change_nothing(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        clinic = seed_clinic(session, org_id, stock=0)
        other = seed_clinic(session, org_id)
    _, empty = given(clean, clinic)
    assert (empty.status, empty.reason) == ("rejected", "insufficient_stock")
    _, wrong_patient = given(clean, clinic, patient_id=other.patient_id)
    assert (wrong_patient.status, wrong_patient.reason) == ("rejected", "prescription_patient_mismatch")
    _, wrong_lot = given(clean, clinic, lot_id=other.lot_id)
    assert wrong_lot.reason == "lot_medication_mismatch"
    _, outside = given(clean, clinic, given_at="2026-10-15T08:00:00+00:00")  # before it started
    assert outside.reason == "prescription_not_in_effect"
    with clean.sessions.begin() as session:
        session.execute(update(Prescription).where(Prescription.id == clinic.prescription_id).values(active=False))
    _, inactive = given(clean, clinic)
    assert inactive.reason == "prescription_inactive"
    assert len(events(clean, "administration.rejected")) == 5
    with clean.sessions() as session:
        assert session.scalar(select(func.count()).select_from(SafetyEvent)) == 0
    assert stock(clean, other.lot_id) == 100


def test_stock_at_the_reorder_level_emits_one_reorder_event(clean: Runtime, org_id: int) -> None:
    with clean.sessions.begin() as session:
        clinic = seed_clinic(session, org_id, stock=11)
    given(clean, clinic)
    given(clean, clinic, given_at="2026-11-30T14:00:00+00:00")
    assert stock(clean, clinic.lot_id) == 9
    assert [e.payload["lot_id"] for e in events(clean, "inventory.reorder_needed")] == [clinic.lot_id]
