"""Request and response bodies of the administration endpoints (the MAR and safety events)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from app.api.clinical_schemas import Amount, Name, Patch, Positive, Short, Strict

Text = Annotated[str, Field(max_length=4000)]
#: How far ahead of the server's clock a device's `given_at` may be.
MAX_CLOCK_SKEW = timedelta(minutes=10)
Route = Annotated[str, Field(min_length=1, max_length=30)]


class AdministrationIn(Strict):
    """A dose given, as a device records it; `record_id` is the device's UUID for this record, forever."""

    record_id: uuid.UUID
    patient_id: int
    prescription_id: int
    dose_amount: Positive
    dose_unit: Short
    route: Route
    given_at: AwareDatetime = Field(description="When the dose was given, with its UTC offset")
    administered_by: Name
    device_id: Annotated[str, Field(min_length=1, max_length=100)]
    lot_id: int | None = None
    quantity: Positive | None = Field(default=None, description="Units drawn from the lot (default: dose ÷ strength)")
    notes: Text | None = None
    side_effects: Text | None = None

    @field_validator("given_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.year < 2000:
            raise ValueError("is before 2000")
        value = value.astimezone(UTC)
        if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
            raise ValueError("is in the future")
        return value


class BatchIn(Strict):
    """Up to 500 records an offline device kept; each gets its own result."""

    records: Annotated[list[dict[str, object]], Field(min_length=1, max_length=500)]


class CorrectionIn(Patch):
    """Documentation fields to correct, why, and (unless sent as If-Match) the version corrected.

    The dose, its time and its lot are not correctable: they were what the safety rules judged.
    """

    nullable: ClassVar[frozenset[str]] = frozenset({"version", "notes", "side_effects"})
    version: int | None = Field(default=None, ge=1)
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    administered_by: Name | None = None
    route: Route | None = None
    notes: Text | None = None
    side_effects: Text | None = None


class RevisionOut(BaseModel):
    """One correction: the version it replaced, what changed, why and when."""

    model_config = ConfigDict(from_attributes=True)

    version: int
    reason: str
    before: dict[str, object]
    after: dict[str, object]
    changed_at: datetime


class AdministrationOut(BaseModel):
    """An administration record and what the safety checks decided."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    record_id: uuid.UUID
    patient_id: int
    prescription_id: int
    lot_id: int | None
    dose_amount: Amount
    dose_unit: str
    route: str
    quantity: Amount | None
    given_at: datetime
    administered_by: str
    device_id: str
    notes: str | None
    side_effects: str | None
    status: Literal["received", "recorded", "blocked", "rejected"]
    reason: str | None
    reason_detail: str | None
    version: int
    conflicts: int
    job_id: int | None
    received_at: datetime
    decided_at: datetime | None
    updated_at: datetime


class JobRef(BaseModel):
    """The ledger job deciding a record, and its status when the answer was given."""

    id: int
    status: str


class ArrivalOut(BaseModel):
    """The answer to a submitted record: the record, its job, and whether it is new or was stored before."""

    arrival: Literal["accepted", "already_recorded"]
    administration: AdministrationOut
    job: JobRef | None
    links: dict[str, str]


class BatchResult(BaseModel):
    """One record's fate in a batch."""

    index: int
    record_id: str | None
    result: Literal["accepted", "already_recorded", "rejected"]
    administration_id: int | None = None
    job_id: int | None = None
    status: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list)


class BatchOut(BaseModel):
    """Per-record results, in the order sent, and their counts."""

    results: list[BatchResult]
    counts: dict[str, int]


class MarQuery(Strict):
    """A patient's administrations between two instants (`from` inclusive, `to` exclusive)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    limit: int = Field(default=200, ge=1, le=1000)


class MarOut(BaseModel):
    """A patient's medication administration record."""

    patient_id: int
    items: list[AdministrationOut]


class SafetyEventQuery(Strict):
    """Safety events of one type, since an instant."""

    type: Literal["DUPLICATE_PREVENTED", "ALLERGY_BLOCKED", "WRONG_DOSE_BLOCKED", "EXPIRED_LOT_BLOCKED"] | None = None
    since: AwareDatetime | None = None
    cursor: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=50, ge=1, le=200)


class SafetyEventOut(BaseModel):
    """A dose a safety rule stopped."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    administration_id: int
    patient_id: int
    event_type: str
    severity: str
    description: str
    context: dict[str, object]
    prevented_action: dict[str, object]
    created_at: datetime


class SafetyEventPage(BaseModel):
    """One page of safety events."""

    items: list[SafetyEventOut]
    next_cursor: str | None
