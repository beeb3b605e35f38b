"""The clinical domain, per organisation: patients, allergies, formulary, prescriptions, stock, the MAR.

Administrations are the medication administration record (MAR). A device-generated `record_id`
is unique per organisation forever, so the same dose can never be stored twice; corrections
bump `version` and keep what they replaced in `administration_revisions`.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base

ALLERGY_SEVERITIES = ("mild", "moderate", "severe", "life-threatening")
SAFETY_EVENT_TYPES = ("DUPLICATE_PREVENTED", "ALLERGY_BLOCKED", "WRONG_DOSE_BLOCKED", "EXPIRED_LOT_BLOCKED")
SAFETY_SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM")


class AdministrationStatus(str, enum.Enum):
    """Where an administration record is: received (job waiting), then one final outcome."""

    RECEIVED = "received"  # stored and acknowledged; the critical-queue job has not decided yet
    RECORDED = "recorded"  # on the MAR; stock decremented
    BLOCKED = "blocked"  # a safety rule stopped it (see its safety event)
    REJECTED = "rejected"  # not valid against the prescription or stock (reason given)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _org() -> Mapped[int]:
    return mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"), index=True)


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Patient(Base):
    """A patient (a student in school health): identifiers, name, date of birth."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("organisation_id", "mrn", name="uq_patients_org_mrn"),
        UniqueConstraint("organisation_id", "student_number", name="uq_patients_org_student_number"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    mrn: Mapped[str | None] = mapped_column(String(64))
    student_number: Mapped[str | None] = mapped_column(String(64))
    given_name: Mapped[str] = mapped_column(String(100))
    family_name: Mapped[str] = mapped_column(String(100))
    date_of_birth: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Allergy(Base):
    """A recorded allergy of a patient; matched against a medication's code, name and ingredients."""

    __tablename__ = "allergies"
    __table_args__ = (CheckConstraint(_in("severity", ALLERGY_SEVERITIES), name="ck_allergies_severity"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    substance_code: Mapped[str | None] = mapped_column(String(64))
    substance_name: Mapped[str] = mapped_column(String(200))
    reaction: Mapped[str | None] = mapped_column(String(500))
    severity: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Medication(Base):
    """A formulary entry: name, code (RxNorm where known), form, strength and unit, ingredients."""

    __tablename__ = "medications"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str | None] = mapped_column(String(64))
    form: Mapped[str] = mapped_column(String(50))
    strength: Mapped[Decimal | None] = mapped_column(Numeric(12, 4))
    unit: Mapped[str] = mapped_column(String(20))
    ingredients: Mapped[list[str]] = mapped_column(ARRAY(String(200)), default=list, server_default="{}")
    # A missed dose of a critical medication (insulin, anticonvulsants…) raises a critical alert.
    critical: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Prescription(Base):
    """An order: a dose of a medication for a patient, on a schedule (times of day, every N hours, PRN)."""

    __tablename__ = "prescriptions"
    __table_args__ = (
        CheckConstraint("dose_amount > 0", name="ck_prescriptions_dose_positive"),
        CheckConstraint(
            "prn OR interval_hours IS NOT NULL OR cardinality(times_of_day) > 0", name="ck_prescriptions_schedule"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    medication_id: Mapped[int] = mapped_column(ForeignKey("medications.id", ondelete="RESTRICT"))
    dose_amount: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    dose_unit: Mapped[str] = mapped_column(String(20))
    route: Mapped[str] = mapped_column(String(30))
    times_of_day: Mapped[list[str]] = mapped_column(ARRAY(String(5)), default=list, server_default="{}")
    interval_hours: Mapped[int | None] = mapped_column(Integer)
    prn: Mapped[bool] = mapped_column(Boolean, default=False)
    # No second dose of this prescription within this many minutes (default: TRIAGE_DUPLICATE_WINDOW_MINUTES).
    duplicate_window_minutes: Mapped[int | None] = mapped_column(Integer)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    prescriber: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class InventoryLot(Base):
    """A lot of a medication in stock: quantity (in the medication's unit), expiry, reorder level."""

    __tablename__ = "inventory_lots"
    __table_args__ = (
        UniqueConstraint("organisation_id", "medication_id", "lot_number", name="uq_inventory_lots_lot"),
        CheckConstraint("quantity >= 0", name="ck_inventory_lots_quantity"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    medication_id: Mapped[int] = mapped_column(ForeignKey("medications.id", ondelete="RESTRICT"), index=True)
    lot_number: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3))
    expires_on: Mapped[date] = mapped_column(Date)
    reorder_level: Mapped[Decimal] = mapped_column(Numeric(12, 3), default=Decimal(0))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Administration(Base):
    """One dose given, as the device reported it, and what the safety checks decided."""

    __tablename__ = "administrations"
    __table_args__ = (
        UniqueConstraint("organisation_id", "record_id", name="uq_administrations_record"),
        Index("ix_administrations_patient_given", "patient_id", "given_at"),
        Index("ix_administrations_recorded", "prescription_id", "given_at",
              postgresql_where=text("status = 'recorded'")),
        CheckConstraint(_in("status", tuple(s.value for s in AdministrationStatus)), name="ck_administrations_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    record_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    content_hash: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"))
    prescription_id: Mapped[int] = mapped_column(ForeignKey("prescriptions.id", ondelete="RESTRICT"))
    lot_id: Mapped[int | None] = mapped_column(ForeignKey("inventory_lots.id", ondelete="RESTRICT"))
    dose_amount: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    dose_unit: Mapped[str] = mapped_column(String(20))
    route: Mapped[str] = mapped_column(String(30))
    quantity: Mapped[Decimal | None] = mapped_column(Numeric(12, 3))  # drawn from the lot (its unit)
    given_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    administered_by: Mapped[str] = mapped_column(String(200))
    device_id: Mapped[str] = mapped_column(String(100))
    notes: Mapped[str | None] = mapped_column(Text)
    side_effects: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=AdministrationStatus.RECEIVED.value)
    reason: Mapped[str | None] = mapped_column(String(100))  # why blocked or rejected (a code)
    reason_detail: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    api_client_id: Mapped[int | None] = mapped_column(ForeignKey("api_clients.id", ondelete="SET NULL"))
    version: Mapped[int] = mapped_column(Integer, default=1)
    conflicts: Mapped[int] = mapped_column(Integer, default=0)  # arrivals of this record_id with other content
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.clock_timestamp())


class AdministrationRevision(Base):
    """What a correction replaced: the fields before and after, who, when and why."""

    __tablename__ = "administration_revisions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    administration_id: Mapped[int] = mapped_column(ForeignKey("administrations.id", ondelete="RESTRICT"), index=True)
    version: Mapped[int] = mapped_column(Integer)  # the version this correction replaced
    api_client_id: Mapped[int | None] = mapped_column(ForeignKey("api_clients.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(Text)
    before: Mapped[dict[str, Any]] = mapped_column(JSONB)
    after: Mapped[dict[str, Any]] = mapped_column(JSONB)
    changed_at: Mapped[datetime] = _created()


class RecordConflict(Base):
    """A record id that arrived again with different content: kept for review, never applied."""

    __tablename__ = "record_conflicts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    administration_id: Mapped[int] = mapped_column(ForeignKey("administrations.id", ondelete="RESTRICT"), index=True)
    api_client_id: Mapped[int | None] = mapped_column(ForeignKey("api_clients.id", ondelete="SET NULL"))
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = _created()


class SafetyEvent(Base):
    """A dose a safety rule stopped: what, how severe, and the action it prevented."""

    __tablename__ = "safety_events"
    __table_args__ = (
        CheckConstraint(_in("event_type", SAFETY_EVENT_TYPES), name="ck_safety_events_type"),
        CheckConstraint(_in("severity", SAFETY_SEVERITIES), name="ck_safety_events_severity"),
        Index("ix_safety_events_org_type_created", "organisation_id", "event_type", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    administration_id: Mapped[int] = mapped_column(ForeignKey("administrations.id", ondelete="RESTRICT"), unique=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"), index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10))
    description: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSONB)
    prevented_action: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created()
