"""Request and response bodies of the immunization and appointment endpoints."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from app.api.clinical_schemas import Code, Out, PageQuery, Patch, Strict

Days = Annotated[int, Field(ge=0, le=36500)]
Label = Annotated[str, Field(min_length=1, max_length=100)]
ImmunizationStatus = Literal["completed", "not-done", "entered-in-error"]
ExemptionReason = Literal["medical", "religious", "personal", "immune"]
AppointmentStatus = Literal["proposed", "booked", "arrived", "fulfilled", "cancelled", "noshow", "entered-in-error"]


class RequirementIn(Strict):
    """A vaccine every patient needs: which codes count, how many doses, when each falls due.

    Dose 1 is due at `first_dose_age_days` of age, each later dose `interval_days` after the one
    before; a dose is overdue `grace_days` after it fell due.
    """

    vaccine: Label
    codes: Annotated[list[Code], Field(min_length=1, max_length=50)]
    doses: Annotated[int, Field(ge=1, le=20)]
    first_dose_age_days: Days = 0
    interval_days: Days = 0
    grace_days: Days = 30
    active: bool = True


class RequirementPatch(Patch):
    """Fields of a requirement to change."""

    codes: Annotated[list[Code], Field(min_length=1, max_length=50)] | None = None
    doses: Annotated[int, Field(ge=1, le=20)] | None = None
    first_dose_age_days: Days | None = None
    interval_days: Days | None = None
    grace_days: Days | None = None
    active: bool | None = None


class RequirementOut(Out):
    """An immunization requirement."""

    vaccine: str
    codes: list[str]
    doses: int
    first_dose_age_days: int
    interval_days: int
    grace_days: int
    active: bool


class ImmunizationIn(Strict):
    """A dose given (or recorded as not given); one per patient, vaccine code and day."""

    patient_id: int
    vaccine_code: Code
    vaccine_name: Annotated[str, Field(min_length=1, max_length=200)]
    occurred_on: date
    lot_number: Code | None = None
    status: ImmunizationStatus = "completed"


class ImmunizationPatch(Patch):
    """Correct a recorded dose (mark a mistake `entered-in-error`)."""

    nullable: ClassVar[frozenset[str]] = frozenset({"lot_number"})
    occurred_on: date | None = None
    lot_number: Code | None = None
    status: ImmunizationStatus | None = None


class ImmunizationOut(Out):
    """A recorded immunization."""

    patient_id: int
    vaccine_code: str
    vaccine_name: str
    occurred_on: date
    lot_number: str | None
    status: str
    source: str


class ExemptionIn(Strict):
    """A requirement waived for one patient, until `expires_on` or for good."""

    patient_id: int
    requirement_id: int
    reason: ExemptionReason
    expires_on: date | None = None


class ExemptionPatch(Patch):
    """Change the reason or the expiry of an exemption."""

    nullable: ClassVar[frozenset[str]] = frozenset({"expires_on"})
    reason: ExemptionReason | None = None
    expires_on: date | None = None


class ExemptionOut(Out):
    """An immunization exemption."""

    patient_id: int
    requirement_id: int
    reason: str
    expires_on: date | None


class AppointmentIn(Strict):
    """A visit booked for a patient; times carry their UTC offset."""

    patient_id: int
    start: AwareDatetime
    end: AwareDatetime | None = None
    status: AppointmentStatus = "booked"
    description: Annotated[str, Field(max_length=500)] | None = None
    location: Annotated[str, Field(max_length=200)] | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> AppointmentIn:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class AppointmentPatch(Patch):
    """Reschedule, cancel or complete an appointment."""

    nullable: ClassVar[frozenset[str]] = frozenset({"end", "description", "location"})
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    status: AppointmentStatus | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    location: Annotated[str, Field(max_length=200)] | None = None


class AppointmentOut(Out):
    """An appointment (from the API or from an HL7 SIU message)."""

    patient_id: int | None
    start: datetime
    end: datetime | None
    status: str
    description: str | None
    location: str | None
    source: str


class PatientQuery(PageQuery):
    """Rows of one patient, or all."""

    patient_id: int | None = None


class OrganisationOut(BaseModel):
    """The caller's organisation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    timezone: str


class OrganisationPatch(Strict):
    """Settings of the caller's organisation: its IANA time zone (reminder times are local)."""

    timezone: Annotated[str, Field(min_length=1, max_length=64)]

    @field_validator("timezone")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone (e.g. Europe/Berlin)") from None
        return value
