"""FHIR R4 resources stored per organisation (JSONB), current version only, and searched.

Saving a message's resources: the Patient is matched by identifier (PID-3 system + value) to one
already stored, so repeated ADT updates one Patient instead of making many; references to the
mapping's provisional Patient id are rewritten to the stored one. Other resources keep their
deterministic ids (from natural keys), so a repeated message updates them in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Select, Table, Text, bindparam, case, func, literal_column, or_, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from app.db import advisory_locks
from app.models import FhirResource

#: Resource types readable through the API.
RESOURCE_TYPES = frozenset({
    "Patient", "Encounter", "Observation", "DiagnosticReport", "Immunization", "MedicationRequest",
    "MedicationAdministration", "Medication", "Appointment", "ServiceRequest", "DocumentReference", "Condition",
    "Procedure", "Specimen", "Practitioner", "Organization", "Location", "RelatedPerson", "Coverage",
})


_TABLE = cast(Table, FhirResource.__table__)
#: `resource -> 'identifier'`, written as the GIN index ix_fhir_resources_identifier is. SQLAlchemy
#: writes `resource['identifier']` (PostgreSQL 14 subscripting), which the index does not match:
#: every search then reads and parses every stored resource of the organisation.
IDENTIFIERS = FhirResource.resource.op("->", return_type=JSONB)(literal_column("'identifier'"))
def _upsert_statement() -> ReturningInsert[str]:
    """Insert a resource or, unless a later message wrote it, replace it and bump its version.

    Built once and executed with one parameter set per resource: SQLAlchemy sends the sets as one
    multi-row INSERT ("insertmanyvalues", which needs the RETURNING) from a cached compiled form.
    """
    statement = insert(_TABLE)
    next_version = _TABLE.c.version_id + 1
    return statement.on_conflict_do_update(
        index_elements=["organisation_id", "resource_type", "id"],
        set_={"resource": func.jsonb_set(statement.excluded.resource, "{meta,versionId}",
                                         func.to_jsonb(func.cast(next_version, Text))),
              "patient_id": statement.excluded.patient_id, "message_id": statement.excluded.message_id,
              "version_id": next_version, "updated_at": func.now()},
        where=or_(_TABLE.c.message_id.is_(None), _TABLE.c.message_id <= statement.excluded.message_id),
    ).returning(_TABLE.c.id)


_UPSERT = _upsert_statement()


class ResourceNotFoundError(LookupError):
    """No such resource in this organisation."""


def _identifiers(resource: dict[str, Any]) -> list[dict[str, str]]:
    return [{"system": i["system"], "value": i["value"]} for i in resource.get("identifier", [])
            if i.get("system") and i.get("value")]


@functools.cache
def _match_statement(identifiers: int) -> Select[str, list[dict[str, Any]]]:
    """The Patient match for a Patient with this many identifiers (`identifier_0`, …), built once."""
    shared = [IDENTIFIERS.contains(bindparam(f"identifier_{n}", type_=JSONB)) for n in range(identifiers)]
    preference = case(*((condition, rank) for rank, condition in enumerate(shared)))
    # `organisation_id + 0`: a form no btree index serves, so the rows are always reached through
    # the identifier index. With statistics that predate an organisation's Patients (a new
    # organisation, a bulk load before autoanalyze) the planner would otherwise walk the primary
    # key through all of the organisation's Patients, testing each: 7 ms at 3,750, and growing.
    return (select(FhirResource.id, IDENTIFIERS.label("identifier"))
            .where((FhirResource.organisation_id + literal_column("0")) == bindparam("organisation_id"),
                   FhirResource.resource_type == "Patient", or_(*shared))
            .order_by(preference, FhirResource.updated_at).limit(1).with_for_update())


def _match_patient(session: Session, organisation_id: int,
                   patient: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """The id and identifiers of a stored Patient sharing any identifier (system + value) with this
    one, locked: one statement that prefers the earliest identifier in the message's order, then
    the least recently updated Patient."""
    identifiers = _identifiers(patient)
    if not identifiers:
        return None
    params = {f"identifier_{n}": [identifier] for n, identifier in enumerate(identifiers)}
    row = session.execute(_match_statement(len(identifiers)), {"organisation_id": organisation_id, **params}).first()
    return None if row is None else (row.id, row.identifier or [])


def _merged_identifiers(old: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The new identifiers, then any old ones the new message no longer lists (never lose one)."""
    seen = {(i.get("system"), i.get("value")) for i in new.get("identifier", [])}
    kept = [i for i in old if (i.get("system"), i.get("value")) not in seen]
    return list(new.get("identifier", [])) + kept


def _rewrite(value: Any, old: str, new: str) -> Any:
    """Every `reference` to `old` (e.g. Patient/abc) pointed at `new`."""
    if isinstance(value, dict):
        return {k: (new if k == "reference" and v == old else _rewrite(v, old, new)) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, old, new) for v in value]
    return value


def lock_keys(organisation_id: int, resources: list[dict[str, Any]], patient_id: str | None) -> list[str]:
    """What a message's save must lock: its Patient's identifiers (system + value) and its other resources."""
    return [f"fhir-patient:{organisation_id}:{i['system']}|{i['value']}" for resource in resources
            if resource["resourceType"] == "Patient" and resource["id"] == patient_id
            for i in _identifiers(resource)] + \
        [f"fhir-resource:{organisation_id}:{r['resourceType']}/{r['id']}" for r in resources
         if r["resourceType"] != "Patient"]


def lock(session: Session, keys: list[str]) -> None:
    """Take the locks of `lock_keys` (sorted, one statement): writers of the same keys queue, never deadlock."""
    advisory_locks(session, keys, seed=1)


def _concerns(resource: dict[str, Any], patient_ref: str | None) -> bool:
    """Whether a resource is about the message's patient (not a shared Practitioner or Organization)."""
    if patient_ref is None:
        return False
    if resource["resourceType"] == "Patient":
        return f"Patient/{resource['id']}" == patient_ref
    return any((resource.get(key) or {}).get("reference") == patient_ref for key in ("subject", "patient")) or \
        any((p.get("actor") or {}).get("reference") == patient_ref for p in resource.get("participant", []))


def save(session: Session, organisation_id: int, resources: list[dict[str, Any]], patient_id: str | None,
         message_id: int, *, locked: bool = False) -> list[str]:
    """Upsert a message's resources; their `Type/id` references as stored.

    Messages about the same person are serialised by advisory locks on the Patient's identifiers,
    so two workers never both create a Patient for someone new, and messages writing the same
    resource by locks on its id, taken first and in one sorted order, so two transactions writing
    the same resources queue instead of deadlocking on their rows (`locked`: the caller holds
    `lock_keys` already; rows these keys do not cover, such as a stored Patient matched through
    another identifier, can still deadlock: PostgreSQL detects it, and the caller retries). A resource last
    written from a later message is left as it is: workers may process messages out of order,
    and an old update must not overwrite a newer one.
    """
    if not locked:
        lock(session, lock_keys(organisation_id, resources, patient_id))
    # A private copy to rewrite: only top-level keys are assigned below, and `_rewrite` builds new
    # containers, so the caller's resources are never changed.
    resources = [dict(resource) for resource in resources]
    stored_patient = patient_id
    for resource in resources:
        if resource["resourceType"] == "Patient" and resource["id"] == patient_id:
            existing = _match_patient(session, organisation_id, resource)
            if existing is not None:
                stored_patient, known = existing
                resource["identifier"] = _merged_identifiers(known, resource)
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
        session.execute(_UPSERT, list(rows.values()))
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
        query = query.where(IDENTIFIERS.contains([wanted]))
    return list(session.scalars(query.order_by(FhirResource.updated_at.desc()).limit(limit)))
