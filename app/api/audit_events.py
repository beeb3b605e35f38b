"""The audit log as the API shows it: filtered records (JSON or FHIR AuditEvents) and a patient's
access report (accounting of disclosures). Scope `audit:read` sees its own organisation; `admin`
sees every organisation and the platform's records. Reading the audit log is itself audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, json, jsonify
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from app.api import auditing
from app.api.auth import current_caller, requires
from app.api.clinical_schemas import PageQuery
from app.api.idempotency import db, transactional
from app.api.openapi import Operation, documented
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import Problem
from app.api.validation import query
from app.models import Patient
from app.services import audit_queries, patient_bundle

blueprint = Blueprint("audit_events", __name__, url_prefix="/v1")
_TAGS = ("audit",)
Text = Annotated[str, Field(min_length=1, max_length=200)]


class AuditQuery(PageQuery):
    """Filters: patient id, actor ("client:12"), action, outcome, a time range; `format=fhir` for a Bundle."""

    patient: Text | None = None
    actor: Text | None = None
    action: Text | None = None
    outcome: Literal["success", "denied", "error"] | None = None
    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    format: Literal["json", "fhir"] = "json"


class AuditEventOut(BaseModel):
    """One audit record: who did what to which record, when, and with what outcome."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    occurred_at: datetime
    organisation_id: int | None
    action: str
    outcome: str
    actor_type: str
    actor_id: str | None
    resource_type: str | None
    resource_id: str | None
    patient_id: str | None
    request_id: str | None
    job_id: int | None
    source_ip: str | None
    user_agent: str | None
    chain: int
    seq: int
    hash: str


class AuditPage(BaseModel):
    """A page of audit records, newest first."""

    items: list[AuditEventOut]
    next_cursor: str | None


class Access(BaseModel):
    """Accesses of one actor with one action and outcome."""

    actor_type: str
    actor: str | None
    action: str
    outcome: str
    count: int
    first: datetime
    last: datetime


class AccessReport(BaseModel):
    """Who accessed a patient's data, how and when."""

    patient_id: int
    accesses: list[Access]


def _scope() -> int | None:
    caller = current_caller()
    return None if "admin" in caller.scopes else caller.organisation_id


@blueprint.get("/audit-events")
@requires("audit:read")
@documented(Operation("Audit records, newest first (format=fhir: a FHIR Bundle of AuditEvents)", query=AuditQuery,
                      response=AuditPage, errors=(401, 403, 422), tags=_TAGS, audit="audit_event.list",
                      audit_resource="AuditEvent"))
@transactional
def list_audit_events() -> Response:
    """Filtered by patient, actor, action, outcome and time; cursor-paginated."""
    params = query(AuditQuery)
    filters = audit_queries.Filters(_scope(), params.patient, params.actor, params.action, params.outcome,
                                    params.from_, params.to)
    rows = audit_queries.page(db(), filters, before_id=decode_cursor(params.cursor), limit=params.limit)
    cursor = encode_cursor(rows[-1].id) if len(rows) == params.limit else None
    if params.format == "fhir":
        bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(rows),
                                  "entry": [{"resource": audit_queries.as_fhir(r)} for r in rows]}
        if cursor:
            bundle["link"] = [{"relation": "next", "url": f"/v1/audit-events?format=fhir&cursor={cursor}"}]
        return Response(json.dumps(bundle), mimetype="application/fhir+json")
    return jsonify({"items": [AuditEventOut.model_validate(r).model_dump(mode="json") for r in rows],
                    "next_cursor": cursor})


@blueprint.get("/patients/<int:patient_id>/access-report")
@requires("audit:read")
@documented(Operation("Who accessed this patient's data, how and when (accounting of disclosures)",
                      response=AccessReport, errors=(401, 403, 404), tags=_TAGS, audit="patient.access_report",
                      audit_resource="Patient"))
@transactional
def access_report(patient_id: int) -> Response:
    """Accesses grouped by actor, action and outcome, most recent first; reads of the FHIR Patient
    matched to it (by MRN) count too."""
    organisation_id = current_caller().organisation_id
    patient = db().get(Patient, patient_id)
    if patient is None or patient.organisation_id != organisation_id:
        raise Problem(404, "Not Found", f"No patient {patient_id}.")
    auditing.subject(patient_id=patient_id)
    ids = [str(patient_id), *(row.id for row in patient_bundle.fhir_patients(db(), patient))]
    return jsonify({"patient_id": patient_id, "accesses": audit_queries.accesses(db(), organisation_id, ids)})
