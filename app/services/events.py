"""Domain events into the outbox table, fanned out to webhook deliveries in the caller's transaction."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import Event
from app.services import webhook_deliveries

_EVENTS = cast(Table, Event.__table__)
#: emit's INSERTs (dispatched now, or not), built once: executed with the values, compiled once.
_INSERT = {deliver: insert(_EVENTS).values(dispatched_at=func.now() if deliver else None)
           .on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(_EVENTS.c.id)
           for deliver in (True, False)}
#: emit_many's INSERT, executed with a parameter set per event: one multi-row statement ("insertmanyvalues").
_INSERT_MANY = (insert(_EVENTS).values(dispatched_at=func.now()).on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(_EVENTS.c.id, _EVENTS.c.organisation_id, _EVENTS.c.type))


def emit(session: Session, *, organisation_id: int, type: str, subject: str, payload: dict[str, Any],
         deliver: bool = True) -> int | None:
    """Store an event once per (type, subject) and create its deliveries; its id, or None if known.

    A job that runs twice emits the event once. `deliver=False` stores it without webhook deliveries. Payloads carry ids and codes only, never PHI;
    subscribers read details through the API.
    """
    event_id: int | None = session.execute(
        _INSERT[deliver], {"organisation_id": organisation_id, "type": type, "dedupe_key": f"{type}:{subject}",
                           "payload": {"type": type, **payload}}
    ).scalar_one_or_none()
    if event_id is not None and deliver:
        webhook_deliveries.fan_out(session, event_id, organisation_id, type)
    return event_id


@dataclass(frozen=True)
class Emission:
    """One event to emit in bulk."""

    organisation_id: int
    type: str
    subject: str
    payload: dict[str, Any]


def emit_many(session: Session, emissions: list[Emission], *, chunk: int = 1000) -> int:
    """Emit many events in a few statements (schedules announce thousands); how many were new."""
    new: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for start in range(0, len(emissions), chunk):
        rows = [{"organisation_id": e.organisation_id, "type": e.type, "dedupe_key": f"{e.type}:{e.subject}",
                 "payload": {"type": e.type, **e.payload}} for e in emissions[start : start + chunk]]
        inserted = cast(list[tuple[int, int, str]], session.execute(_INSERT_MANY, rows).all())
        for event_id, organisation_id, kind in inserted:
            new[organisation_id].append((event_id, kind))
    for organisation_id, created in new.items():
        webhook_deliveries.fan_out_many(session, organisation_id, created)
    return sum(len(created) for created in new.values())
