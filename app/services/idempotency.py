"""Idempotency-Key retention: records are kept at least RETENTION_HOURS, then pruned."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func
from sqlalchemy.orm import Session

from app.models import IdempotencyRecord

#: The published policy: a key replays its first response for at least this long.
RETENTION_HOURS = 72


def prune(session: Session, *, older_than_hours: int = RETENTION_HOURS) -> int:
    """Delete stored responses older than the retention (never younger); return how many."""
    hours = max(older_than_hours, RETENTION_HOURS)
    cutoff = func.now() - timedelta(hours=hours)
    result = session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
