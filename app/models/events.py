"""The event outbox: domain events stored in the transaction that caused them, delivered later.

Emitting an event fans it out, in the same transaction, to one webhook delivery per subscribed
endpoint (`dispatched_at` says when). Payloads carry ids and codes only, never PHI. `dedupe_key` makes emitting the same fact twice (a job run twice) a no-op.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class Event(Base):
    """Something that happened, for subscribers: `administration.recorded`, `safety.alert`, …"""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_org_created", "organisation_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(ForeignKey("organisations.id", ondelete="RESTRICT"))
    type: Mapped[str] = mapped_column(String(100))
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
