"""Immunizations and appointments, per organisation: recorded through the API or taken from HL7.

A requirement says which vaccine (any of its codes) a patient needs, how many doses, and when each
is due (age at the first dose, days between doses); exemptions waive one requirement for one
patient. Immunizations and appointments from HL7 (VXU, SIU) keep the FHIR resource they came from
in `source_ref`, so reprocessing a message updates the same row.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.clinical import _created, _in, _org

IMMUNIZATION_STATUSES = ("completed", "not-done", "entered-in-error")
EXEMPTION_REASONS = ("medical", "religious", "personal", "immune")
APPOINTMENT_STATUSES = ("proposed", "booked", "arrived", "fulfilled", "cancelled", "noshow", "entered-in-error")
SOURCES = ("api", "hl7")


class ImmunizationRequirement(Base):
    """A vaccine every patient of the organisation needs: doses, and when each falls due."""

    __tablename__ = "immunization_requirements"
    __table_args__ = (
        UniqueConstraint("organisation_id", "vaccine", name="uq_immunization_requirements_org_vaccine"),
        CheckConstraint("doses >= 1", name="ck_immunization_requirements_doses"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    vaccine: Mapped[str] = mapped_column(String(100))  # a label: "MMR", "DTaP"
    codes: Mapped[list[str]] = mapped_column(ARRAY(String(64)))  # CVX/NDC codes that count as a dose
    doses: Mapped[int] = mapped_column(Integer)
    first_dose_age_days: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    interval_days: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    grace_days: Mapped[int] = mapped_column(Integer, default=30, server_default=text("30"))
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Immunization(Base):
    """A vaccine dose a patient received (or was recorded as not given)."""

    __tablename__ = "immunizations"
    __table_args__ = (
        UniqueConstraint("organisation_id", "patient_id", "vaccine_code", "occurred_on",
                         name="uq_immunizations_patient_vaccine_day"),
        UniqueConstraint("organisation_id", "source_ref", name="uq_immunizations_org_source_ref"),
        CheckConstraint(_in("status", IMMUNIZATION_STATUSES), name="ck_immunizations_status"),
        CheckConstraint(_in("source", SOURCES), name="ck_immunizations_source"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    vaccine_code: Mapped[str] = mapped_column(String(64))
    vaccine_name: Mapped[str] = mapped_column(String(200))
    occurred_on: Mapped[date] = mapped_column(Date)
    lot_number: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="completed", server_default="completed")
    source: Mapped[str] = mapped_column(String(10), default="api", server_default="api")
    source_ref: Mapped[str | None] = mapped_column(String(140))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class ImmunizationExemption(Base):
    """A requirement waived for one patient (until an expiry date, or for good)."""

    __tablename__ = "immunization_exemptions"
    __table_args__ = (
        UniqueConstraint("patient_id", "requirement_id", name="uq_immunization_exemptions_patient_requirement"),
        CheckConstraint(_in("reason", EXEMPTION_REASONS), name="ck_immunization_exemptions_reason"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    requirement_id: Mapped[int] = mapped_column(ForeignKey("immunization_requirements.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(20))
    expires_on: Mapped[date | None] = mapped_column(Date)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Appointment(Base):
    """A visit booked for a patient (the patient may be unknown to Triage when it came from HL7)."""

    __tablename__ = "appointments"
    __table_args__ = (
        UniqueConstraint("organisation_id", "source_ref", name="uq_appointments_org_source_ref"),
        CheckConstraint(_in("status", APPOINTMENT_STATUSES), name="ck_appointments_status"),
        CheckConstraint(_in("source", SOURCES), name="ck_appointments_source"),
        Index("ix_appointments_status_start", "status", "start"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = _org()
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(20), default="booked", server_default="booked")
    description: Mapped[str | None] = mapped_column(String(500))
    location: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(10), default="api", server_default="api")
    source_ref: Mapped[str | None] = mapped_column(String(140))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
