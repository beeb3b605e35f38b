"""FHIR R4 resources stored per organisation (JSONB), current version only, and searched.

Saving a message's resources: the Patient is matched by identifier (PID-3 system + value) to one
already stored, so repeated ADT updates one Patient instead of making many; references to the
mapping's provisional Patient id are rewritten to the stored one. Other resources keep their
deterministic ids (from natural keys), so a repeated message updates them in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.models import FhirResource

#: Resource types readable through the API.
RESOURCE_TYPES = frozenset({
    "Patient", "Encounter", "Observation", "DiagnosticReport", "Immunization", "MedicationRequest",
    "MedicationAdministration", "Medication", "Appointment", "ServiceRequest", "DocumentReference", "Condition",
    "Procedure", "Specimen", "Practitioner", "Organization", "Location", "RelatedPerson", "Coverage",
})


class ResourceNotFoundError(LookupError):
    """No such resource in this organisation."""


def _identifiers(resource: dict[str, Any]) -> list[dict[str, str]]:
    return [{"system": i["system"], "value": i["value"]} for i in resource.get("identifier", [])
            if i.get("system") and i.get("value")]


def _match_patient(session: Session, organisation_id: int, patient: dict[str, Any]) -> FhirResource | None:
    """A stored Patient sharing any identifier (system + value) with this one."""
    for identifier in _identifiers(patient):
        found = session.scalars(
            select(FhirResource).where(FhirResource.organisation_id == organisation_id,
                                       FhirResource.resource_type == "Patient",
                                       FhirResource.resource["identifier"].contains([identifier]))
            .order_by(FhirResource.updated_at).limit(1).with_for_update()
        ).first()
        if found is not None:
            return found
    return None


def _merged_identifiers(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The new identifiers, then any old ones the new message no longer lists (never lose one)."""
    seen = {(i.get("system"), i.get("value")) for i in new.get("identifier", [])}
    kept = [i for i in old.get("identifier", []) if (i.get("system"), i.get("value")) not in seen]
    return list(new.get("identifier", [])) + kept


def _rewrite(value: Any, old: str, new: str) -> Any:
    """Every `reference` to `old` (e.g. Patient/abc) pointed at `new`."""
    if isinstance(value, dict):
        return {k: (new if k == "reference" and v == old else _rewrite(v, old, new)) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, old, new) for v in value]
    return value


def _lock_identities(session: Session, organisation_id: int, patient: dict[str, Any]) -> None:
    """Serialise messages about the same person (by identifier, in a fixed order), so two workers
    never both create a Patient for someone new."""
    for identifier in sorted(f"{i['system']}|{i['value']}" for i in _identifiers(patient)):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 1))"),
                        {"key": f"fhir-patient:{organisation_id}:{identifier}"})


def _concerns(resource: dict[str, Any], patient_ref: str | None) -> bool:
    """Whether a resource is about the message's patient (not a shared Practitioner or Organization)."""
    if patient_ref is None:
        return False
    if resource["resourceType"] == "Patient":
        return f"Patient/{resource['id']}" == patient_ref
    return any((resource.get(key) or {}).get("reference") == patient_ref for key in ("subject", "patient")) or \
        any((p.get("actor") or {}).get("reference") == patient_ref for p in resource.get("participant", []))


def save(session: Session, organisation_id: int, resources: list[dict[str, Any]], patient_id: str | None,
         message_id: int) -> list[str]:
    """Upsert a message's resources; their `Type/id` references as stored.

    A resource last written from a later message is left as it is: workers may process messages
    out of order, and an old update must not overwrite a newer one.
    """
    resources = json.loads(json.dumps(resources))  # a private copy to rewrite
    stored_patient = patient_id
    for resource in resources:
        if resource["resourceType"] == "Patient" and resource["id"] == patient_id:
            _lock_identities(session, organisation_id, resource)
            existing = _match_patient(session, organisation_id, resource)
            if existing is not None:
                stored_patient = existing.id
                resource["identifier"] = _merged_identifiers(existing.resource, resource)
    if patient_id and stored_patient != patient_id:
        resources = _rewrite(resources, f"Patient/{patient_id}", f"Patient/{stored_patient}")
        for resource in resources:
            if resource["resourceType"] == "Patient" and resource["id"] == patient_id:
                resource["id"] = stored_patient
    ref = f"Patient/{stored_patient}" if stored_patient else None
    return _upsert_all(session, organisation_id, resources, lambda r: stored_patient if _concerns(r, ref) else None,
                       message_id)


def _upsert_all(session: Session, organisation_id: int, resources: list[dict[str, Any]],
                patient_of: Callable[[dict[str, Any]], str | None], message_id: int) -> list[str]:
    """Insert or update every resource in one statement (the last copy of a repeated id wins)."""
    now = datetime.now(UTC).isoformat()
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in resources:
        kind, rid = resource["resourceType"], resource["id"]
        resource["meta"] = {**resource.get("meta", {}), "versionId": "1", "lastUpdated": now}
        rows[(kind, rid)] = {"organisation_id": organisation_id, "resource_type": kind, "id": rid,
                             "resource": resource, "patient_id": patient_of(resource), "message_id": message_id}
    if rows:
        statement = insert(FhirResource).values(list(rows.values()))
        next_version = FhirResource.version_id + 1
        session.execute(statement.on_conflict_do_update(
            index_elements=["organisation_id", "resource_type", "id"],
            set_={"resource": func.jsonb_set(statement.excluded.resource, "{meta,versionId}",
                                             func.to_jsonb(func.cast(next_version, Text))),
                  "patient_id": statement.excluded.patient_id, "message_id": message_id,
                  "version_id": next_version, "updated_at": func.now()},
            where=or_(FhirResource.message_id.is_(None), FhirResource.message_id <= message_id)))
    return [f"{kind}/{rid}" for kind, rid in (( r["resourceType"], r["id"]) for r in resources)]


def read(session: Session, organisation_id: int, resource_type: str, resource_id: str) -> dict[str, Any]:
    """One stored resource."""
    row = session.get(FhirResource, (organisation_id, resource_type, resource_id))
    if row is None:
        raise ResourceNotFoundError(f"{resource_type}/{resource_id} not found")
    return row.resource


def search(session: Session, organisation_id: int, resource_type: str, *, patient: str | None = None,
           identifier: tuple[str | None, str] | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Resources of a type, by the Patient they concern and/or an identifier (system may be None)."""
    query = select(FhirResource.resource).where(FhirResource.organisation_id == organisation_id,
                                                FhirResource.resource_type == resource_type)
    if patient is not None:
        target = patient.removeprefix("Patient/")
        query = query.where(FhirResource.id == target) if resource_type == "Patient" \
            else query.where(FhirResource.patient_id == target)
    if identifier is not None:
        system, value = identifier
        wanted = {"value": value, **({"system": system} if system else {})}
        query = query.where(FhirResource.resource["identifier"].contains([wanted]))
    return list(session.scalars(query.order_by(FhirResource.updated_at.desc()).limit(limit)))
