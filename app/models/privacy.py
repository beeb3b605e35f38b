"""Data-subject requests (GDPR Art. 15/17/20): access, portability and erasure, with a due date.

`patient_id` is deliberately not a foreign key: the request (and what it kept or removed) must
outlive anything an erasure removes, and it is the record that the request was honoured.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.clinical import _in

PRIVACY_REQUEST_TYPES = ("access", "portability", "erasure")
PRIVACY_REQUEST_STATUSES = ("queued", "running", "completed", "failed")


class PrivacyRequest(Base):
    """One data-subject request: queued → running → completed (bundle or outcome) or failed."""

    __tablename__ = "privacy_requests"
    __table_args__ = (
        PrimaryKeyConstraint("id", name="pk_privacy_requests"),
        Index("ix_privacy_requests_org_id", "organisation_id", "id"),
        Index("ix_privacy_requests_org_patient", "organisation_id", "patient_id"),
        CheckConstraint(_in("type", PRIVACY_REQUEST_TYPES), name="ck_privacy_requests_type"),
        CheckConstraint(_in("status", PRIVACY_REQUEST_STATUSES), name="ck_privacy_requests_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger)
    organisation_id: Mapped[int] = mapped_column(
        ForeignKey("organisations.id", ondelete="RESTRICT", name="fk_privacy_requests_organisation_id"))
    patient_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key: the request outlives an erasure
    type: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(12), server_default="queued")
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # one month after the request (Art. 12(3))
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL", name="fk_privacy_requests_job_id"), index=True)
    api_client_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_clients.id", ondelete="SET NULL", name="fk_privacy_requests_api_client_id"))
    bundle: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # the FHIR Bundle (access, portability)
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # kept / removed, with reasons and counts
    error: Mapped[str | None] = mapped_column(Text)  # ids and codes only, never PHI
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
