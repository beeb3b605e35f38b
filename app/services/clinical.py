"""Patients, allergies, medications, prescriptions, inventory, immunizations and appointments: scoped
create, read, update.

Every row belongs to one organisation; a reference to another organisation's row is treated
exactly like a reference to no row at all, so nothing reveals what other tenants hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import (
    Administration,
    Allergy,
    Appointment,
    Immunization,
    ImmunizationExemption,
    ImmunizationRequirement,
    InventoryLot,
    Medication,
    Patient,
    Prescription,
)

Row = TypeVar("Row", Patient, Allergy, Medication, Prescription, InventoryLot, Administration, ImmunizationRequirement,
              Immunization, ImmunizationExemption, Appointment)

#: Which fields of each table point at another organisation-scoped table.
REFERENCES: dict[type[Any], dict[str, type[Any]]] = {
    Allergy: {"patient_id": Patient},
    Prescription: {"patient_id": Patient, "medication_id": Medication},
    InventoryLot: {"medication_id": Medication},
    Administration: {"patient_id": Patient, "prescription_id": Prescription, "lot_id": InventoryLot},
    Immunization: {"patient_id": Patient},
    ImmunizationExemption: {"patient_id": Patient, "requirement_id": ImmunizationRequirement},
    Appointment: {"patient_id": Patient},
}


class RecordNotFoundError(LookupError):
    """No such row in this organisation."""


class InvalidReferenceError(ValueError):
    """A field names a row that does not exist in this organisation."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field}: no such record in this organisation")
        self.field = field


class DuplicateRecordError(ValueError):
    """A unique identifier (MRN, student number, lot number…) is already taken in this organisation."""

    def __init__(self, constraint: str) -> None:
        super().__init__(f"already exists ({constraint})")
        self.constraint = constraint


def exists(session: Session, model: type[Any], row_id: int, *, organisation_id: int) -> bool:
    """Whether `model` row `row_id` belongs to this organisation."""
    query = select(model.id).where(model.id == row_id, model.organisation_id == organisation_id)
    return session.scalar(query) is not None


def check_references(session: Session, model: type[Any], values: Mapping[str, Any], *, organisation_id: int) -> None:
    """Raise InvalidReferenceError for the first reference outside this organisation."""
    for field, target in REFERENCES.get(model, {}).items():
        if values.get(field) is not None and not exists(session, target, values[field], organisation_id=organisation_id):
            raise InvalidReferenceError(field)


def _flush(session: Session, row: Any) -> None:
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError as exc:
        constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None) or "unique"
        raise DuplicateRecordError(constraint) from None


def create(session: Session, model: type[Row], values: Mapping[str, Any], *, organisation_id: int) -> Row:
    """Insert a row for this organisation after checking its references."""
    check_references(session, model, values, organisation_id=organisation_id)
    row = model(organisation_id=organisation_id, **values)
    _flush(session, row)
    return row


def get(session: Session, model: type[Row], row_id: int, *, organisation_id: int, lock: bool = False) -> Row:
    """One row of this organisation, or RecordNotFoundError."""
    query = select(model).where(model.id == row_id, model.organisation_id == organisation_id)
    row = session.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise RecordNotFoundError(f"{model.__tablename__} {row_id} not found")
    return row


def update(session: Session, model: type[Row], row_id: int, values: Mapping[str, Any], *,
           organisation_id: int) -> Row:
    """Change the given fields of one row of this organisation."""
    row = get(session, model, row_id, organisation_id=organisation_id, lock=True)
    check_references(session, model, values, organisation_id=organisation_id)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = func.now()
    _flush(session, row)
    session.refresh(row)
    return row


def page(session: Session, model: type[Row], *, organisation_id: int, filters: Mapping[str, Any],
         before_id: int | None, limit: int) -> list[Row]:
    """This organisation's rows, newest first, equal to every non-null filter, after the cursor."""
    query = select(model).where(model.organisation_id == organisation_id).order_by(model.id.desc()).limit(limit)
    for name, value in filters.items():
        if value is not None:
            query = query.where(getattr(model, name) == value)
    if before_id is not None:
        query = query.where(model.id < before_id)
    return list(session.scalars(query))
