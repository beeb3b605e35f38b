"""Reading the audit log: filtered pages, a patient's accounting of disclosures, FHIR AuditEvents."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from app.models import AuditEvent

#: The FHIR AuditEvent.action code for the last word of an action ("patient.read" → R).
_FHIR_ACTIONS = {"create": "C", "create_batch": "C", "read": "R", "list": "R", "search": "R", "update": "U",
                 "delete": "D", "export": "E", "purge": "D"}
_FHIR_OUTCOMES = {"success": "0", "denied": "4", "error": "8"}


@dataclass(frozen=True)
class Filters:
    """Which audit records to list; None means any."""

    organisation_id: int | None  # None: every organisation and the platform (operators only)
    patient: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _query(filters: Filters) -> Select[Any]:
    query = select(AuditEvent)
    for column, value in ((AuditEvent.organisation_id, filters.organisation_id), (AuditEvent.patient_id, filters.patient),
                          (AuditEvent.actor_id, filters.actor), (AuditEvent.action, filters.action),
                          (AuditEvent.outcome, filters.outcome)):
        if value is not None:
            query = query.where(column == value)
    if filters.since is not None:
        query = query.where(AuditEvent.occurred_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.occurred_at < filters.until)
    return query


def page(session: Session, filters: Filters, *, before_id: int | None, limit: int) -> list[AuditEvent]:
    """Matching records, newest first, after the cursor."""
    query = _query(filters).order_by(AuditEvent.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    return list(session.scalars(query))


def accesses(session: Session, organisation_id: int, patient_ids: list[str]) -> list[dict[str, Any]]:
    """Who touched this patient's data (under any of its ids: clinical, FHIR) and how: per actor and
    action, how often, first and last time."""
    rows = session.execute(
        select(AuditEvent.actor_type, AuditEvent.actor_id, AuditEvent.action, AuditEvent.outcome, func.count(),
               func.min(AuditEvent.occurred_at), func.max(AuditEvent.occurred_at))
        .where(AuditEvent.organisation_id == organisation_id, AuditEvent.patient_id.in_(patient_ids))
        .group_by(AuditEvent.actor_type, AuditEvent.actor_id, AuditEvent.action, AuditEvent.outcome)
        .order_by(func.max(AuditEvent.occurred_at).desc()))
    return [{"actor_type": kind, "actor": actor, "action": action, "outcome": outcome, "count": count,
             "first": first.isoformat(), "last": last.isoformat()}
            for kind, actor, action, outcome, count, first, last in rows]


def as_fhir(row: AuditEvent) -> dict[str, Any]:
    """One record as a FHIR R4 AuditEvent (identifiers only, like the record)."""
    entities: list[dict[str, Any]] = []
    if row.patient_id:
        entities.append({"what": {"reference": f"Patient/{row.patient_id}"}, "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"}})
    if row.resource_type:
        entities.append({"what": {"identifier": {"system": f"urn:triage:{row.resource_type}",
                                                 "value": row.resource_id or "*"}}})
    agent: dict[str, Any] = {"requestor": True, "who": {"identifier": {"system": f"urn:triage:{row.actor_type}",
                                                                       "value": row.actor_id or "unknown"}}}
    if row.source_ip:
        agent["network"] = {"address": row.source_ip, "type": "2"}
    return {
        "resourceType": "AuditEvent", "id": str(row.id),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "urn:triage:audit-action", "code": row.action}],
        "action": _FHIR_ACTIONS.get(row.action.rsplit(".", 1)[-1], "E"),
        "recorded": row.occurred_at.isoformat(), "outcome": _FHIR_OUTCOMES[row.outcome],
        "agent": [agent], "source": {"observer": {"display": "Triage"}, "site": f"chain {row.chain} seq {row.seq}"},
        **({"entity": entities} if entities else {}),
    }
