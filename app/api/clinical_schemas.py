"""Request and response bodies of the clinical set-up endpoints (patients … inventory)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, field_validator, model_validator

#: A decimal amount in, a JSON number out.
Amount = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
Positive = Annotated[Amount, Field(gt=0, max_digits=12, decimal_places=4)]
NonNegative = Annotated[Amount, Field(ge=0, max_digits=12, decimal_places=3)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Code = Annotated[str, Field(min_length=1, max_length=64)]
Short = Annotated[str, Field(min_length=1, max_length=20)]
TimeOfDay = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
Severity = Literal["mild", "moderate", "severe", "life-threatening"]


class Strict(BaseModel):
    """Unknown fields are errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class Patch(Strict):
    """A partial update: only the fields sent change; `null` only where the field may be empty."""

    nullable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: Any) -> Any:
        if value is None and info.field_name not in cls.nullable:
            raise ValueError("may not be null")
        return value


class Out(BaseModel):
    """A stored row as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime
    updated_at: datetime


class PatientIn(Strict):
    """A patient: at least one identifier (MRN or student number)."""

    mrn: Code | None = None
    student_number: Code | None = None
    given_name: Annotated[str, Field(min_length=1, max_length=100)]
    family_name: Annotated[str, Field(min_length=1, max_length=100)]
    date_of_birth: date

    @model_validator(mode="after")
    def _identified(self) -> PatientIn:
        if not (self.mrn or self.student_number):
            raise ValueError("give an mrn or a student_number")
        return self


class PatientPatch(Patch):
    """Fields of a patient to change."""

    nullable: ClassVar[frozenset[str]] = frozenset({"mrn", "student_number"})
    mrn: Code | None = None
    student_number: Code | None = None
    given_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    family_name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    date_of_birth: date | None = None


class PatientOut(Out):
    """A patient."""

    mrn: str | None
    student_number: str | None
    given_name: str
    family_name: str
    date_of_birth: date


class AllergyIn(Strict):
    """An allergy of a patient to a substance (code and/or name)."""

    patient_id: int
    substance_code: Code | None = None
    substance_name: Name
    reaction: Annotated[str, Field(max_length=500)] | None = None
    severity: Severity


class AllergyPatch(Patch):
    """Fields of an allergy to change."""

    nullable: ClassVar[frozenset[str]] = frozenset({"substance_code", "reaction"})
    substance_code: Code | None = None
    substance_name: Name | None = None
    reaction: Annotated[str, Field(max_length=500)] | None = None
    severity: Severity | None = None


class AllergyOut(Out):
    """An allergy."""

    patient_id: int
    substance_code: str | None
    substance_name: str
    reaction: str | None
    severity: str


class MedicationIn(Strict):
    """A formulary entry: strength in `unit` per dispensing unit of `form` (e.g. 500 mg per tablet)."""

    name: Name
    code: Code | None = Field(default=None, description="RxNorm code where known")
    form: Annotated[str, Field(min_length=1, max_length=50)]
    strength: Positive | None = None
    unit: Short
    ingredients: list[Name] = Field(default_factory=list, max_length=50)
    critical: bool = Field(default=False, description="a missed dose raises a critical alert")


class MedicationPatch(Patch):
    """Fields of a medication to change."""

    nullable: ClassVar[frozenset[str]] = frozenset({"code", "strength"})
    name: Name | None = None
    code: Code | None = None
    form: Annotated[str, Field(min_length=1, max_length=50)] | None = None
    strength: Positive | None = None
    unit: Short | None = None
    ingredients: list[Name] | None = None
    critical: bool | None = None


class MedicationOut(Out):
    """A medication."""

    name: str
    code: str | None
    form: str
    strength: Amount | None
    unit: str
    ingredients: list[str]
    critical: bool


class PrescriptionIn(Strict):
    """A dose of a medication for a patient on a schedule: times of day, every N hours, or as needed."""

    patient_id: int
    medication_id: int
    dose_amount: Positive
    dose_unit: Short
    route: Annotated[str, Field(min_length=1, max_length=30)]
    times_of_day: list[TimeOfDay] = Field(default_factory=list, max_length=24)
    interval_hours: Annotated[int, Field(ge=1, le=168)] | None = None
    prn: bool = False
    duplicate_window_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None
    start_date: date
    end_date: date | None = None
    active: bool = True
    prescriber: Name

    @model_validator(mode="after")
    def _scheduled(self) -> PrescriptionIn:
        if not (self.prn or self.interval_hours or self.times_of_day):
            raise ValueError("give times_of_day, interval_hours, or prn: true")
        if self.end_date is not None and self.end_date < self.start_date:
            raise ValueError("end_date is before start_date")
        return self


class PrescriptionPatch(Patch):
    """Fields of a prescription to change (stop it with `active: false` or an `end_date`)."""

    nullable: ClassVar[frozenset[str]] = frozenset({"interval_hours", "duplicate_window_minutes", "end_date"})
    dose_amount: Positive | None = None
    dose_unit: Short | None = None
    route: Annotated[str, Field(min_length=1, max_length=30)] | None = None
    times_of_day: list[TimeOfDay] | None = None
    interval_hours: Annotated[int, Field(ge=1, le=168)] | None = None
    prn: bool | None = None
    duplicate_window_minutes: Annotated[int, Field(ge=1, le=10080)] | None = None
    end_date: date | None = None
    active: bool | None = None
    prescriber: Name | None = None


class PrescriptionOut(Out):
    """A prescription."""

    patient_id: int
    medication_id: int
    dose_amount: Amount
    dose_unit: str
    route: str
    times_of_day: list[str]
    interval_hours: int | None
    prn: bool
    duplicate_window_minutes: int | None
    start_date: date
    end_date: date | None
    active: bool
    prescriber: str


class InventoryLotIn(Strict):
    """A lot in stock: quantity in dispensing units (tablets, mL …)."""

    medication_id: int
    lot_number: Code
    quantity: NonNegative
    expires_on: date
    reorder_level: NonNegative = Decimal(0)


class InventoryLotPatch(Patch):
    """Stock count, expiry or reorder level to change."""

    quantity: NonNegative | None = None
    expires_on: date | None = None
    reorder_level: NonNegative | None = None


class InventoryLotOut(Out):
    """A lot in stock."""

    medication_id: int
    lot_number: str
    quantity: Amount
    expires_on: date
    reorder_level: Amount


class PageQuery(Strict):
    """Cursor pagination, and optional filters a resource may accept."""

    cursor: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=200)


class AllergyQuery(PageQuery):
    """Allergies, optionally of one patient."""

    patient_id: int | None = None


class PrescriptionQuery(PageQuery):
    """Prescriptions, optionally of one patient or only active ones."""

    patient_id: int | None = None
    active: bool | None = None


class InventoryLotQuery(PageQuery):
    """Lots, optionally of one medication."""

    medication_id: int | None = None
