"""Data-subject requests (GDPR Art. 15/17/20), scope `privacy:manage`: request (202 + job, due in one
month), follow status and outcome (what erasure kept and removed, and why), download an export's
FHIR Bundle (application/fhir+json). Another organisation's requests and patients are 404s.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask import Blueprint, Response, g, json, jsonify, url_for
from pydantic import BaseModel, ConfigDict, Field

from app.api import auditing
from app.api.auth import current_caller, requires
from app.api.clinical_schemas import PageQuery, Strict
from app.api.idempotency import db, idempotent, transactional
from app.api.openapi import Operation, documented
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import Problem
from app.api.validation import body, query
from app.models import PrivacyRequest
from app.services import privacy

blueprint = Blueprint("privacy", __name__, url_prefix="/v1")
_TAGS = ("privacy",)
_SCOPE = "privacy:manage"
FHIR_JSON = "application/fhir+json"
RequestType = Literal["access", "portability", "erasure"]


class PrivacyRequestIn(Strict):
    """A data-subject request: access or portability (a FHIR Bundle export) or erasure, for one patient."""

    type: RequestType
    patient: int = Field(ge=1, description="the clinical patient's id")


class PrivacyRequestOut(BaseModel):
    """A request's state and due date; when completed, its outcome (export summary, or kept/removed with
    reasons for an erasure)."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    patient_id: int
    status: str
    due_at: datetime
    created_at: datetime
    finished_at: datetime | None
    job_id: int | None
    error: str | None
    outcome: dict[str, Any] | None


class PrivacyRequestPage(BaseModel):
    """A page of privacy requests."""

    items: list[PrivacyRequestOut]
    next_cursor: str | None


class PrivacyQuery(PageQuery):
    """Privacy requests by status and type."""

    status: Literal["queued", "running", "completed", "failed"] | None = None
    type: RequestType | None = None


def _out(row: PrivacyRequest) -> dict[str, Any]:
    out = PrivacyRequestOut.model_validate(row).model_dump(mode="json")
    out["links"] = {"self": url_for("privacy.get_request", privacy_request_id=row.id)}
    if row.type != "erasure":
        out["links"]["bundle"] = url_for("privacy.download_bundle", privacy_request_id=row.id)
    return out


@blueprint.post("/privacy/requests")
@requires(_SCOPE)
@idempotent()
@documented(Operation("Request access to, a portable copy of, or erasure of a patient's data (fulfilled by a job)",
                      audit="privacy_request.create", audit_resource="PrivacyRequest", body=PrivacyRequestIn,
                      response=PrivacyRequestOut, status=202, idempotent=True, errors=(401, 403, 404, 422),
                      tags=_TAGS))
def create_request() -> tuple[Response, int, dict[str, str]]:
    """202 with the request, its job and its due date; follow `links.self`."""
    wanted = body(PrivacyRequestIn)
    caller = current_caller()
    try:
        row = privacy.request(db(), organisation_id=caller.organisation_id, patient_id=wanted.patient,
                              type=wanted.type, api_client_id=caller.client_id, request_id=g.get("request_id"))
    except privacy.PatientNotFoundError:
        raise Problem(404, "Not Found", f"No patient {wanted.patient}.") from None
    auditing.subject(resource_id=row.id, patient_id=row.patient_id)
    return jsonify(_out(row)), 202, {"Location": url_for("privacy.get_request", privacy_request_id=row.id)}


def _request(privacy_request_id: int) -> PrivacyRequest:
    try:
        row = privacy.get(db(), privacy_request_id, organisation_id=current_caller().organisation_id)
    except privacy.PrivacyRequestNotFoundError:
        raise Problem(404, "Not Found", f"No privacy request {privacy_request_id}.") from None
    auditing.subject(resource_id=row.id, patient_id=row.patient_id)
    return row


@blueprint.get("/privacy/requests/<int:privacy_request_id>")
@requires(_SCOPE)
@documented(Operation("A privacy request's status, due date and outcome (what was kept or removed, and why)",
                      audit="privacy_request.read", audit_resource="PrivacyRequest", response=PrivacyRequestOut,
                      errors=(401, 403, 404), tags=_TAGS))
@transactional
def get_request(privacy_request_id: int) -> Response:
    """The request as it stands."""
    return jsonify(_out(_request(privacy_request_id)))


@blueprint.get("/privacy/requests/<int:privacy_request_id>/bundle")
@requires(_SCOPE)
@documented(Operation("Download an access or portability export: a FHIR R4 Bundle (application/fhir+json); 409 "
                      "while not ready, 404 for an erasure, 410 once a later erasure removed it",
                      audit="patient.export", audit_resource="PrivacyRequest", errors=(401, 403, 404, 409, 410),
                      tags=_TAGS))
@transactional
def download_bundle(privacy_request_id: int) -> Response:
    """The Bundle as an attachment."""
    row = _request(privacy_request_id)
    if row.type == "erasure":
        raise Problem(404, "Not Found", f"Privacy request {row.id} is an erasure: it has no bundle.")
    if row.status != "completed":
        raise Problem(409, "Conflict", f"Privacy request {row.id} is {row.status}, not completed.",
                      "privacy-request-not-ready", extensions={"status": row.status})
    if row.bundle is None:
        raise Problem(410, "Gone", f"The export of privacy request {row.id} was removed (a later erasure, or its "
                      "retention passed).")
    return Response(json.dumps(row.bundle), mimetype=FHIR_JSON, headers={
        "Content-Disposition": f'attachment; filename="patient-export-{row.id}.json"', "Cache-Control": "no-store"})


@blueprint.get("/privacy/requests")
@requires(_SCOPE)
@documented(Operation("List privacy requests, newest first", audit="privacy_request.list",
                      audit_resource="PrivacyRequest", query=PrivacyQuery, response=PrivacyRequestPage,
                      errors=(401, 403, 422), tags=_TAGS))
@transactional
def list_requests() -> Response:
    """By status and type."""
    params = query(PrivacyQuery)
    rows = privacy.page(db(), organisation_id=current_caller().organisation_id, status=params.status,
                        type=params.type, before_id=decode_cursor(params.cursor), limit=params.limit)
    cursor = encode_cursor(rows[-1].id) if len(rows) == params.limit else None
    return jsonify({"items": [_out(r) for r in rows], "next_cursor": cursor})
