"""The audit log: hash-chained, append-only audit events, their chain heads, daily archives and legal holds.

The chaining and the append-only rules live in PostgreSQL triggers (migration 0014); the canonical
form they hash is described in `app.services.audit`. Write events only through `audit.record`.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.clinical import _in

ACTOR_TYPES = ("client", "operator", "system")
OUTCOMES = ("success", "denied", "error")
#: The hash of "no previous record": the prev_hash of each chain's first record.
GENESIS_HASH = "0" * 64


class AuditEvent(Base):
    """One audited action; chain, seq, occurred_at, prev_hash and hash are set by the database."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("chain", "seq", name="uq_audit_events_chain_seq"),
        Index("ix_audit_events_org_occurred", "organisation_id", "occurred_at"),
        Index("ix_audit_events_org_id", "organisation_id", "id"),
        Index("ix_audit_events_org_patient_occurred", "organisation_id", "patient_id", "occurred_at"),
        Index("ix_audit_events_org_actor", "organisation_id", "actor_id"),
        CheckConstraint(_in("outcome", OUTCOMES), name="ck_audit_events_outcome"),
        CheckConstraint(_in("actor_type", ACTOR_TYPES), name="ck_audit_events_actor_type"),
        CheckConstraint("hash ~ '^[0-9a-f]{64}$' AND prev_hash ~ '^[0-9a-f]{64}$'", name="ck_audit_events_hashes"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chain: Mapped[int] = mapped_column(BigInteger)  # the organisation id; 0: platform-level events
    seq: Mapped[int] = mapped_column(BigInteger)  # position in its chain, from 1
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("clock_timestamp()"))
    # No foreign key: audit records outlive the organisation and the patient (erasure).
    organisation_id: Mapped[int | None] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(16))
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(200))
    resource_type: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(200))
    patient_id: Mapped[str | None] = mapped_column(String(100))
    request_id: Mapped[str | None] = mapped_column(String(100))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    source_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """The last link of one chain; only the chaining trigger changes it."""

    __tablename__ = "audit_chain_heads"

    chain: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditArchive(Base):
    """One archived day of one chain: its file (relative to the archive folder) and where it sits in the chain."""

    __tablename__ = "audit_archives"
    __table_args__ = (UniqueConstraint("chain", "day", name="uq_audit_archives_chain_day"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chain: Mapped[int] = mapped_column(BigInteger)
    day: Mapped[date] = mapped_column(Date)  # UTC
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    record_count: Mapped[int] = mapped_column(Integer)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))  # the hash of the day's last record
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LegalHold(Base):
    """While active (not released), no audit record of its organisation (None: of any) is archived or removed."""

    __tablename__ = "legal_holds"
    __table_args__ = (Index("ix_legal_holds_active", "organisation_id", postgresql_where=text("released_at IS NULL")),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int | None] = mapped_column(BigInteger)  # no foreign key, like audit_events
    reason: Mapped[str] = mapped_column(String(500))
    placed_by: Mapped[str | None] = mapped_column(String(200))
    placed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    released_by: Mapped[str | None] = mapped_column(String(200))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
