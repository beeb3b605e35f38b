"""Request and response bodies of the webhook endpoints, deliveries and breakers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.api.clinical_schemas import PageQuery, Patch, Strict

Url = Annotated[str, Field(min_length=8, max_length=2000, description="https:// URL of a public address")]
EventTypes = Annotated[list[Annotated[str, Field(min_length=1, max_length=100)]], Field(min_length=1, max_length=50)]
RateLimit = Annotated[int, Field(ge=1, le=100_000, description="deliveries per minute at most")]
RetrySchedule = Annotated[list[Annotated[float, Field(ge=0, le=86_400)]], Field(max_length=20, description=(
    "seconds to wait before each retry; attempts = 1 + its length (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, "
    "10 h), each moved by up to ±20 %"))]
Description = Annotated[str, Field(max_length=500)]


class EndpointIn(Strict):
    """A subscription: where to send which event types (`administration.*`, `*` wildcards)."""

    url: Url
    event_types: EventTypes
    description: Description | None = None
    enabled: bool = True
    rate_limit_per_minute: RateLimit | None = None
    retry_schedule: RetrySchedule | None = None


class EndpointPatch(Patch):
    """Fields of an endpoint to change (`enabled: true` re-enables a disabled one)."""

    nullable: ClassVar[frozenset[str]] = frozenset({"description", "rate_limit_per_minute", "retry_schedule"})

    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = None
    rate_limit_per_minute: RateLimit | None = None
    retry_schedule: RetrySchedule | None = None


class EndpointOut(BaseModel):
    """An endpoint as the API shows it (never its secrets)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    event_types: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    rate_limit_per_minute: int | None
    retry_schedule: list[float] | None
    failing_since: datetime | None
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreated(EndpointOut):
    """A new endpoint with its signing secret: shown this once, store it now."""

    secret: str


class EndpointPage(BaseModel):
    """A page of endpoints."""

    items: list[EndpointOut]
    next_cursor: str | None


class RotateIn(Strict):
    """How long the old secret keeps signing beside the new one (default: the server's setting)."""

    overlap_seconds: Annotated[float, Field(ge=0, le=30 * 86_400)] | None = None


class RotatedOut(BaseModel):
    """The new secret (shown once) and until when the previous one still signs."""

    id: int
    secret: str
    previous_secret_expires_at: datetime


class DeliveryOut(BaseModel):
    """One event to one endpoint: `message_id` is the webhook-id header of every attempt."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    endpoint_id: int
    event_id: int
    message_id: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    job_id: int | None
    created_at: datetime
    delivered_at: datetime | None


class AttemptOut(BaseModel):
    """One HTTP attempt of a delivery."""

    model_config = ConfigDict(from_attributes=True)

    number: int
    outcome: str
    status_code: int | None
    latency_ms: float | None
    response_body: str | None
    error: str | None
    attempted_at: datetime


class DeliveryDetail(DeliveryOut):
    """A delivery with its event type and every attempt."""

    event_type: str
    history: list[AttemptOut]


class DeliveryPage(BaseModel):
    """A page of deliveries."""

    items: list[DeliveryOut]
    next_cursor: str | None


class DeliveryQuery(PageQuery):
    """Deliveries, optionally by status and endpoint."""

    status: Literal["pending", "retrying", "delivered", "dead", "cancelled"] | None = None
    endpoint_id: int | None = None


class RecoverQuery(Strict):
    """Send again every dead delivery created since this time."""

    since: AwareDatetime


class Accepted(BaseModel):
    """Work accepted: the delivery or job to follow."""

    delivery_id: int | None = None
    job_id: int | None = None
    matched: int | None = None
    links: dict[str, str]


class BreakerOut(BaseModel):
    """A circuit breaker: closed, open (until half_opens_at) or half-open, with its failure count."""

    name: str
    state: str
    failures: int
    opened_at: datetime | None
    half_opens_at: datetime | None


class BreakerList(BaseModel):
    """Every circuit breaker in use."""

    items: list[BreakerOut]
