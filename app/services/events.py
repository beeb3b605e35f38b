"""Domain events into the outbox table, in the caller's transaction (the webhooks issue delivers them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import Event


def emit(session: Session, *, organisation_id: int, type: str, subject: str, payload: dict[str, Any]) -> None:
    """Store an event once per (type, subject): a job that runs twice emits it once.

    Payloads carry ids and codes only, never PHI; subscribers read details through the API.
    """
    session.execute(
        insert(Event)
        .values(organisation_id=organisation_id, type=type, dedupe_key=f"{type}:{subject}",
                payload={"type": type, **payload})
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
    )
