"""The job ledger: organisations, API clients, jobs with their attempt history, idempotency keys."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base


class JobStatus(str, enum.Enum):
    """Where a ledger job is in its life; the last three are final."""

    PENDING = "pending"  # committed, but Redis could not take it yet (the reconciler will)
    QUEUED = "queued"  # committed and handed to its RQ queue
    RUNNING = "running"  # claimed by a worker
    RETRYING = "retrying"  # failed transiently, waiting in RQ's scheduled registry
    SUCCEEDED = "succeeded"
    DEAD = "dead"  # in the dead letters: RQ's failed registry, replayable
    CANCELLED = "cancelled"



def _status_check() -> str:
    values = ", ".join(f"'{s.value}'" for s in JobStatus)
    return f"status IN ({values})"


class Organisation(Base):
    """A tenant: every job and record belongs to exactly one."""

    __tablename__ = "organisations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")  # IANA name
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiClient(Base):
    """An API key holder: the key is stored only as a hash."""

    __tablename__ = "api_clients"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_prefix: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), default=list)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """The job ledger: the durable truth about every piece of accepted work."""

    __tablename__ = "jobs"
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - INSERT … RETURNING server timestamps
    __table_args__ = (
        UniqueConstraint("organisation_id", "idempotency_key", name="uq_jobs_org_idempotency_key"),
        Index(
            "ix_jobs_unfinished",
            "status",
            "updated_at",
            postgresql_where=text("status NOT IN ('succeeded', 'dead', 'cancelled')"),
        ),
        Index("ix_jobs_org_created", "organisation_id", "created_at"),
        # Dead letters are grouped and counted per queue by operators and by every metrics scrape.
        Index("ix_jobs_dead", "queue", "kind", "last_error_type", postgresql_where=text("status = 'dead'")),
        CheckConstraint(_status_check(), name="ck_jobs_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(50))
    arguments: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(200))
    last_error_type: Mapped[str | None] = mapped_column(String(200))
    last_error_message: Mapped[str | None] = mapped_column(Text)
    last_error_traceback: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_id: Mapped[str | None] = mapped_column(String(100))
    result_ref: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    attempt_history: Mapped[list[JobAttempt]] = relationship(
        back_populates="job", order_by="JobAttempt.id", cascade="all, delete-orphan", passive_deletes=True
    )


class JobAttempt(Base):
    """One execution of a ledger job, however it ended."""

    __tablename__ = "job_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    outcome: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="attempt_history")


class IdempotencyRecord(Base):
    """The stored response of a work-creating POST, replayed for the same Idempotency-Key."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("api_client_id", "key", name="uq_idempotency_client_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    api_client_id: Mapped[int] = mapped_column(ForeignKey("api_clients.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[Any] = mapped_column(JSONB)
    response_headers: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), index=True)
