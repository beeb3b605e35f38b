"""Domain events into the outbox table, fanned out to webhook deliveries in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import Event
from app.services import webhook_deliveries


def emit(session: Session, *, organisation_id: int, type: str, subject: str, payload: dict[str, Any],
         deliver: bool = True) -> int | None:
    """Store an event once per (type, subject) and create its deliveries; its id, or None if known.

    A job that runs twice emits the event once. `deliver=False` stores it without webhook deliveries. Payloads carry ids and codes only, never PHI;
    subscribers read details through the API.
    """
    event_id: int | None = session.execute(
        insert(Event)
        .values(organisation_id=organisation_id, type=type, dedupe_key=f"{type}:{subject}",
                payload={"type": type, **payload})
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Event.id)
    ).scalar_one_or_none()
    if event_id is not None and deliver:
        webhook_deliveries.fan_out(session, event_id, organisation_id, type)
    return event_id
