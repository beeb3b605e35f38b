"""Medication administrations: receive a device's record once, decide it on the critical queue, correct it.

- `receive` stores the record and its ledger job in the caller's transaction. The record id is
  unique per organisation forever (`INSERT … ON CONFLICT DO NOTHING`), so a resend — concurrent,
  in a batch, or months later — finds the stored record instead of adding one.
- `decide` (the job) runs the safety rules with the administration and its prescription locked,
  so two doses of one prescription are decided one after the other, and writes the verdict, the
  stock change and the event in one transaction. A second run finds the record decided and stops.
- `correct` changes documentation fields under optimistic locking and keeps what it replaced.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import (
    Administration,
    AdministrationRevision,
    AdministrationStatus,
    Allergy,
    InventoryLot,
    Medication,
    Patient,
    Prescription,
    RecordConflict,
    SafetyEvent,
)
from app.services import alerts, safety
from app.services.clinical import check_references, get
from app.services.events import emit
from app.services.jobs import submit

#: The job kind that decides an administration (declared in jobs/administrations.py).
RECORD_KIND = "administrations.record"
#: Fields a correction may change: documentation, not the dose, its time or its lot (the safety
#: rules judged those; changing them would need the rules again).
CORRECTABLE = ("administered_by", "route", "notes", "side_effects")

Arrival = Literal["accepted", "already_recorded", "conflict"]


class StaleVersionError(RuntimeError):
    """A correction based on a version that is no longer current."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the administration is at version {current}")
        self.current = current


@dataclass(frozen=True)
class Received:
    """What became of an arriving record: stored now, stored before (same content), or a conflict."""

    administration: Administration
    arrival: Arrival


@dataclass(frozen=True)
class Decision:
    """A decided administration, for metrics: its status, reason code, severity and latency."""

    status: str
    reason: str | None
    severity: str | None
    latency_seconds: float
    already_decided: bool = False


def _canonical(value: Any) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # 500 and 500.0 are the same dose
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()  # one instant, whatever offset it was sent with
    return str(value)


def content_hash(record: dict[str, Any]) -> str:
    """A stable hash of a record's clinical content (normalised values, keys sorted)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=_canonical).encode()).hexdigest()


def receive(session: Session, record: dict[str, Any], *, organisation_id: int, api_client_id: int | None,
            request_id: str | None) -> Received:
    """Store a device's record and its job once; recognise a resend; flag a changed resend."""
    check_references(session, Administration, record, organisation_id=organisation_id)
    digest = content_hash(record)
    new_id = session.scalar(
        insert(Administration)
        .values(organisation_id=organisation_id, content_hash=digest, api_client_id=api_client_id,
                status=AdministrationStatus.RECEIVED.value, version=1, conflicts=0, **record)
        .on_conflict_do_nothing(constraint="uq_administrations_record")
        .returning(Administration.id)
    )
    if new_id is None:
        return _arrived_again(session, record, digest, organisation_id=organisation_id, api_client_id=api_client_id)
    job = submit(session, RECORD_KIND, new_id, organisation_id=organisation_id, request_id=request_id)
    administration = session.get_one(Administration, new_id)
    administration.job_id = job.id
    job.result_ref = f"/v1/administrations/{new_id}"
    session.flush()
    return Received(administration, "accepted")


def _arrived_again(session: Session, record: dict[str, Any], digest: str, *, organisation_id: int,
                   api_client_id: int | None) -> Received:
    existing = session.scalars(
        select(Administration)
        .where(Administration.organisation_id == organisation_id, Administration.record_id == record["record_id"])
        .with_for_update()
    ).one()
    if existing.content_hash == digest:
        return Received(existing, "already_recorded")
    seen = select(RecordConflict.id).where(RecordConflict.administration_id == existing.id,
                                           RecordConflict.content_hash == digest)
    if session.scalar(seen) is not None:  # the same conflicting resend again (a device retry loop)
        return Received(existing, "conflict")
    existing.conflicts += 1
    session.add(RecordConflict(organisation_id=organisation_id, administration_id=existing.id,
                               api_client_id=api_client_id, content_hash=digest,
                               content=json.loads(json.dumps(record, default=_canonical))))
    session.flush()
    return Received(existing, "conflict")


def decide(session: Session, administration_id: int, *, tolerance: float, window_minutes: int) -> Decision:
    """Run the safety rules on a received administration and record the verdict (idempotent)."""
    adm = session.scalars(select(Administration).where(Administration.id == administration_id).with_for_update()).one()
    if adm.status != AdministrationStatus.RECEIVED.value:
        return Decision(adm.status, adm.reason, None, 0.0, already_decided=True)
    prescription = session.scalars(
        select(Prescription).where(Prescription.id == adm.prescription_id).with_for_update()
    ).one()
    medication = session.get_one(Medication, prescription.medication_id)
    lot = session.get(InventoryLot, adm.lot_id, with_for_update=True) if adm.lot_id else None
    rejection = _rejection(adm, prescription, lot)
    if rejection:
        return _reject(session, adm, rejection)
    block = _first_block(session, adm, prescription, medication, lot, tolerance, window_minutes)
    if block:
        return _block(session, adm, block)
    quantity = safety.stock_quantity(adm, medication)
    if lot is not None and lot.quantity < quantity:
        return _reject(session, adm, "insufficient_stock")
    return _record(session, adm, lot, quantity)


def _rejection(adm: Administration, prescription: Prescription, lot: InventoryLot | None) -> str | None:
    if prescription.patient_id != adm.patient_id:
        return "prescription_patient_mismatch"
    if not prescription.active:
        return "prescription_inactive"
    day = adm.given_at.date()
    if day < prescription.start_date or (prescription.end_date is not None and day > prescription.end_date):
        return "prescription_not_in_effect"
    if lot is not None and lot.medication_id != prescription.medication_id:
        return "lot_medication_mismatch"
    return None


def _first_block(session: Session, adm: Administration, prescription: Prescription, medication: Medication,
                 lot: InventoryLot | None, tolerance: float, window_minutes: int) -> safety.Block | None:
    allergies = session.scalars(select(Allergy).where(Allergy.patient_id == adm.patient_id)).all()
    window = safety.duplicate_window(prescription, window_minutes)
    previous = session.scalars(
        select(Administration)
        .where(Administration.prescription_id == prescription.id,
               Administration.status == AdministrationStatus.RECORDED.value,
               Administration.given_at > adm.given_at - window, Administration.given_at < adm.given_at + window)
        .order_by(func.abs(func.extract("epoch", Administration.given_at - adm.given_at)))
        .limit(1)
    ).first()
    return (safety.allergy_block(allergies, medication)
            or safety.dose_block(Decimal(adm.dose_amount), adm.dose_unit, prescription, tolerance)
            or safety.duplicate_block(previous, adm.given_at, window)
            or (safety.expired_lot_block(lot, adm.given_at) if lot is not None else None))


def _finish(session: Session, adm: Administration, status: AdministrationStatus, reason: str | None,
            detail: str | None = None) -> float:
    adm.status = status.value
    adm.reason = reason
    adm.reason_detail = detail
    decided: datetime = session.execute(select(func.clock_timestamp())).scalar_one()
    adm.decided_at = adm.updated_at = decided
    session.flush()
    return (decided - adm.received_at).total_seconds()


def _record(session: Session, adm: Administration, lot: InventoryLot | None, quantity: Decimal) -> Decision:
    if lot is not None:
        was_above = lot.quantity > lot.reorder_level
        lot.quantity -= quantity
        lot.updated_at = func.now()
        if was_above and lot.quantity <= lot.reorder_level:
            emit(session, organisation_id=adm.organisation_id, type="inventory.reorder_needed",
                 subject=f"{lot.id}:{adm.id}", payload={"lot_id": lot.id, "medication_id": lot.medication_id})
    adm.quantity = quantity if lot is not None else adm.quantity
    latency = _finish(session, adm, AdministrationStatus.RECORDED, None)
    emit(session, organisation_id=adm.organisation_id, type="administration.recorded", subject=str(adm.id),
         payload={"administration_id": adm.id, "record_id": str(adm.record_id)})
    return Decision(AdministrationStatus.RECORDED.value, None, None, latency)


def _block(session: Session, adm: Administration, block: safety.Block) -> Decision:
    event = SafetyEvent(organisation_id=adm.organisation_id, administration_id=adm.id, patient_id=adm.patient_id,
                        event_type=block.event_type, severity=block.severity, description=block.description,
                        context=block.context, prevented_action=_prevented(adm))
    session.add(event)
    latency = _finish(session, adm, AdministrationStatus.BLOCKED, block.event_type.lower(), block.description)
    emit(session, organisation_id=adm.organisation_id, type="safety.alert", subject=str(event.id),
         payload={"safety_event_id": event.id, "event_type": block.event_type, "severity": block.severity,
                  "administration_id": adm.id})
    alerts.trigger(session, alerts.Condition(
        adm.organisation_id, "safety_event", str(event.id), alerts.SAFETY_SEVERITY[block.severity],
        f"Safety event {block.event_type} ({block.severity}): a dose was blocked (administration {adm.id}, "
        f"safety event {event.id}, organisation {adm.organisation_id}).",
        {"safety_event_id": event.id, "administration_id": adm.id, "event_type": block.event_type,
         "severity": block.severity}))
    return Decision(AdministrationStatus.BLOCKED.value, block.event_type.lower(), block.severity, latency)


def _reject(session: Session, adm: Administration, reason: str) -> Decision:
    latency = _finish(session, adm, AdministrationStatus.REJECTED, reason)
    emit(session, organisation_id=adm.organisation_id, type="administration.rejected", subject=str(adm.id),
         payload={"administration_id": adm.id, "record_id": str(adm.record_id), "reason": reason})
    return Decision(AdministrationStatus.REJECTED.value, reason, None, latency)


def _prevented(adm: Administration) -> dict[str, Any]:
    return {"action": "administer", "prescription_id": adm.prescription_id, "dose_amount": str(adm.dose_amount),
            "dose_unit": adm.dose_unit, "route": adm.route, "lot_id": adm.lot_id,
            "given_at": adm.given_at.isoformat(), "record_id": str(adm.record_id)}


def correct(session: Session, administration_id: int, changes: dict[str, Any], *, organisation_id: int,
            expected_version: int, reason: str, api_client_id: int | None) -> Administration:
    """Apply a correction to documentation fields; the replaced values are kept as a revision."""
    adm = get(session, Administration, administration_id, organisation_id=organisation_id, lock=True)
    if adm.version != expected_version:
        raise StaleVersionError(adm.version)
    unknown = set(changes) - set(CORRECTABLE)
    if unknown:
        raise ValueError(f"not correctable: {', '.join(sorted(unknown))}")
    before = {name: _json(getattr(adm, name)) for name in changes}
    for name, value in changes.items():
        setattr(adm, name, value)
    session.add(AdministrationRevision(administration_id=adm.id, version=adm.version, api_client_id=api_client_id,
                                       reason=reason, before=before,
                                       after={name: _json(value) for name, value in changes.items()}))
    adm.version += 1
    adm.updated_at = func.clock_timestamp()
    session.flush()
    session.refresh(adm)
    return adm


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def revisions(session: Session, administration_id: int) -> list[AdministrationRevision]:
    """A record's corrections, oldest first."""
    query = select(AdministrationRevision).where(AdministrationRevision.administration_id == administration_id)
    return list(session.scalars(query.order_by(AdministrationRevision.id)))


def for_patient(session: Session, patient_id: int, *, organisation_id: int, since: datetime | None,
                until: datetime | None, limit: int) -> list[Administration]:
    """A patient's MAR: administrations between two times, newest first."""
    get(session, Patient, patient_id, organisation_id=organisation_id)
    query = select(Administration).where(Administration.patient_id == patient_id,
                                         Administration.organisation_id == organisation_id)
    if since is not None:
        query = query.where(Administration.given_at >= since)
    if until is not None:
        query = query.where(Administration.given_at < until)
    return list(session.scalars(query.order_by(Administration.given_at.desc(), Administration.id.desc()).limit(limit)))


def safety_events(session: Session, *, organisation_id: int, event_type: str | None, since: datetime | None,
                  before_id: int | None, limit: int) -> list[SafetyEvent]:
    """This organisation's safety events, newest first."""
    query = select(SafetyEvent).where(SafetyEvent.organisation_id == organisation_id)
    if event_type:
        query = query.where(SafetyEvent.event_type == event_type)
    if since is not None:
        query = query.where(SafetyEvent.created_at >= since)
    if before_id is not None:
        query = query.where(SafetyEvent.id < before_id)
    return list(session.scalars(query.order_by(SafetyEvent.id.desc()).limit(limit)))
