"""HL7 v2 messages as received (raw, with their ACK), the FHIR R4 resources made from them, and
messages to deliver to MLLP destinations."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class MessageStatus(str, enum.Enum):
    """Where an inbound message is."""

    ACCEPTED = "accepted"  # stored and ACKed AA; its transform job waits or runs
    PROCESSED = "processed"  # transformed; its FHIR resources are stored
    FAILED = "failed"  # the transform failed permanently (reason kept; in the dead letters)
    REJECTED = "rejected"  # ACKed AR: kept for review, never processed
    UNSUPPORTED = "unsupported"  # a type Triage does not map: stored and ACKed AA, not processed


class Hl7Message(Base):
    """One inbound message exactly as received, with what was answered."""

    __tablename__ = "hl7_messages"
    __table_args__ = (
        Index("ix_hl7_messages_duplicates", "organisation_id", "sender", "control_id", "received_at"),
        Index("ix_hl7_messages_org_id", "organisation_id", "id"),
        CheckConstraint("status IN (" + ", ".join(f"'{s.value}'" for s in MessageStatus) + ")",
                        name="ck_hl7_messages_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    transport: Mapped[str] = mapped_column(String(8))  # mllp | http
    sender: Mapped[str] = mapped_column(String(400))  # MSH-3^MSH-4 ('' when there is no MSH)
    message_type: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(20))
    version: Mapped[str] = mapped_column(String(20))
    control_id: Mapped[str] = mapped_column(String(200))
    charset: Mapped[str] = mapped_column(String(20))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)  # bytes received (raw may be cut at the size limit)
    status: Mapped[str] = mapped_column(String(12))
    ack: Mapped[str] = mapped_column(Text)
    ack_code: Mapped[str] = mapped_column(String(2))
    error: Mapped[str | None] = mapped_column(String(500))  # codes and locations only, never PHI
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    resources: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FhirResource(Base):
    """A FHIR R4 resource of one organisation, current version, made from HL7 messages."""

    __tablename__ = "fhir_resources"
    __table_args__ = (
        PrimaryKeyConstraint("organisation_id", "resource_type", "id"),
        Index("ix_fhir_resources_patient", "organisation_id", "resource_type", "patient_id"),
        # No pending list (migration 0016): every transform searches this index to match its Patient.
        Index("ix_fhir_resources_identifier", text("(resource -> 'identifier') jsonb_path_ops"),
              postgresql_using="gin", postgresql_with={"fastupdate": "off"}),
    )

    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    resource_type: Mapped[str] = mapped_column(String(64))
    id: Mapped[str] = mapped_column(String(64))
    resource: Mapped[dict[str, Any]] = mapped_column(JSONB)
    patient_id: Mapped[str | None] = mapped_column(String(64))  # the Patient it concerns
    message_id: Mapped[int | None] = mapped_column(ForeignKey("hl7_messages.id", ondelete="SET NULL"))
    version_id: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OutboundMessage(Base):
    """An HL7 message to deliver to a named MLLP destination, in order per destination."""

    __tablename__ = "hl7_outbound"
    __table_args__ = (
        Index("ix_hl7_outbound_waiting", "destination", "id", postgresql_where=text("status = 'pending'")),
        Index("ix_hl7_outbound_org_id", "organisation_id", "id"),
        CheckConstraint("status IN ('pending', 'sent', 'dead')", name="ck_hl7_outbound_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    destination: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    message_type: Mapped[str] = mapped_column(String(20))
    control_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(10), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    ack: Mapped[str | None] = mapped_column(Text)
    ack_code: Mapped[str | None] = mapped_column(String(2))
    error: Mapped[str | None] = mapped_column(String(500))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
