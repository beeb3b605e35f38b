"""HL7 v2 over HTTP (the same ACK as MLLP) and the FHIR R4 resources made from HL7 messages.

`POST /v1/hl7/messages` (scope `hl7:write`): the body is the message (ER7; `\r`, `\n` or `\r\n`
between segments). 202 with the ACK and the job when accepted (AA), 422 problem+json carrying
the AR when rejected, 503 with the AE when it could not be stored. `GET /v1/hl7/messages/{id}`
(scope `hl7:read`). `POST /v1/hl7/outbound` queues a message for a configured MLLP destination.
FHIR reads (scope `clinical:read`) answer `application/fhir+json`.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, json, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.exc import OperationalError

from app.api import app_runtime, auditing
from app.api.auth import current_caller, requires
from app.api.clinical_schemas import Strict
from app.api.idempotency import db, idempotent, transactional
from app.api.openapi import Operation, documented
from app.api.problems import FieldError, Problem
from app.api.validation import body, query
from app.fhir.errors import MappingError
from app.models import Hl7Message, OutboundMessage
from app.services import fhir_store, hl7_envelope, hl7_intake, hl7_outbound
from workers import hl7_metrics

blueprint = Blueprint("hl7", __name__, url_prefix="/v1")
FHIR_JSON = "application/fhir+json"


class IntakeOut(BaseModel):
    """The ACK answered (as MLLP would) and what was stored."""

    ack: str
    ack_code: str
    message_id: int | None
    job_id: int | None
    duplicate: bool
    links: dict[str, str]


class MessageOut(BaseModel):
    """A stored message: raw (base64 and, decoded, text), status, the ACK sent, errors, resources."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    transport: str
    sender: str
    message_type: str
    trigger: str
    version: str
    control_id: str
    status: str
    ack: str
    ack_code: str
    error: str | None
    size: int
    raw_base64: str
    raw_text: str
    job_id: int | None
    resources: list[str]
    received_at: datetime
    processed_at: datetime | None


class FhirSearch(Strict):
    """Search by the Patient a resource concerns and/or an identifier (`system|value` or `value`)."""

    patient: str | None = Field(default=None, max_length=80)
    identifier: str | None = Field(default=None, max_length=400)
    count: int = Field(default=50, ge=1, le=200, alias="_count")


def _policy() -> hl7_intake.Policy:
    settings = app_runtime().settings
    return hl7_intake.Policy(max_bytes=min(settings.hl7_max_bytes, settings.max_body_bytes),
                             duplicate_window_seconds=settings.hl7_duplicate_window,
                             reject_unsupported=settings.hl7_reject_unsupported)


def _answer(intake: hl7_intake.Intake) -> Response:
    auditing.subject(resource_id=intake.message_id)
    links = {"message": url_for("hl7.get_message", message_id=intake.message_id)} if intake.message_id else {}
    if intake.job_id:
        links["job"] = url_for("jobs.get_job", job_id=intake.job_id)
    out = IntakeOut(ack=intake.ack, ack_code=intake.code, message_id=intake.message_id, job_id=intake.job_id,
                    duplicate=intake.duplicate, links=links).model_dump()
    if intake.code == "AR":
        return Problem(422, "Unprocessable Content", "The HL7 message was rejected (AR); see the ACK's ERR segment.",
                       "hl7-rejected", [FieldError("body", "MSH", "rejected")], extensions=out).to_response()
    return Response(json.dumps(out), status=202 if intake.code == "AA" else 200, mimetype="application/json")


@blueprint.post("/hl7/messages")
@requires("hl7:write")
@documented(Operation("Submit an HL7 v2 message (ER7 body); the answer carries the same ACK as MLLP",
                      audit="hl7_message.create", audit_resource="Hl7Message",
                      response=IntakeOut, status=202, errors=(401, 403, 415, 422, 503), tags=("hl7",)))
@transactional
def submit_message() -> Response:
    """AA: stored and queued for transform (202); AR: rejected and kept for review (422).

    Resending is safe without an Idempotency-Key: the same sender + MSH-10 gets the first answer.
    """
    if request.mimetype not in ("x-application/hl7-v2+er7", "application/hl7-v2", "text/plain"):
        raise Problem(415, "Unsupported Media Type", "Send the message as x-application/hl7-v2+er7 or text/plain.",
                      errors=[FieldError("header", "Content-Type", "must be an HL7 v2 ER7 media type")])
    raw = request.get_data(cache=True)
    intake = hl7_intake.receive(db(), raw, organisation_id=current_caller().organisation_id, transport="http",
                                policy=_policy())
    hl7_metrics.answered(intake.message_type, "http", intake.code, None if intake.code == "AA" else "rejected")
    return _answer(intake)


@blueprint.errorhandler(OperationalError)
def _database_down(exc: OperationalError) -> Response:
    """PostgreSQL unreachable (at authentication, storing or commit): an HL7 sender gets its AE."""
    problem = Problem(503, "Service Unavailable", "A backing service is unavailable; retry later.",
                      headers={"Retry-After": "5"})
    if request.endpoint == "hl7.submit_message":
        hl7_metrics.answered("", "http", "AE", "database_unavailable")
        problem = Problem(503, "Service Unavailable", "The message could not be stored; send it again later.",
                          headers={"Retry-After": "5"},
                          extensions={"ack": hl7_intake.unavailable_ack(request.get_data(cache=True)),
                                      "ack_code": "AE"})
    return problem.to_response()


@blueprint.get("/hl7/messages/<int:message_id>")
@requires("hl7:read")
@documented(Operation("One stored message: raw, status, ACK sent, errors, FHIR resources produced",
                      audit="hl7_message.read", audit_resource="Hl7Message",
                      response=MessageOut, errors=(401, 403, 404), tags=("hl7",)))
@transactional
def get_message(message_id: int) -> Response:
    """Only the caller's organisation's messages."""
    message = db().get(Hl7Message, message_id)
    if message is None or message.organisation_id != current_caller().organisation_id:
        raise Problem(404, "Not Found", f"No HL7 message {message_id}.")
    raw = bytes(message.raw)
    out = MessageOut.model_validate({**{c: getattr(message, c) for c in MessageOut.model_fields if hasattr(message, c)},
                                     "raw_base64": base64.b64encode(raw).decode(),
                                     "raw_text": raw.decode(message.charset or "utf-8", "replace")})
    return Response(out.model_dump_json(), mimetype="application/json")


class OutboundIn(Strict):
    """A message for a configured destination: ER7 text, or a stored Patient/DiagnosticReport to render."""

    destination: str = Field(min_length=1, max_length=100)
    message: str | None = Field(default=None, min_length=8, max_length=10_000_000)
    resource: str | None = Field(default=None, pattern=r"^(Patient|DiagnosticReport)/[A-Za-z0-9.-]{1,64}$")

    @model_validator(mode="after")
    def _one(self) -> OutboundIn:
        if (self.message is None) == (self.resource is None):
            raise ValueError("give either message or resource")
        return self


class OutboundOut(BaseModel):
    """An outbound message: pending, sent (with the destination's ACK) or dead."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    destination: str
    message_type: str
    control_id: str
    status: str
    attempts: int
    ack: str | None
    ack_code: str | None
    error: str | None
    job_id: int | None
    created_at: datetime
    sent_at: datetime | None


@blueprint.post("/hl7/outbound")
@requires("hl7:write")
@idempotent()
@documented(Operation("Deliver an HL7 v2 message (or a stored Patient/DiagnosticReport rendered as ADT/ORU) to a "
                      "configured MLLP destination", audit="hl7_outbound.create", audit_resource="OutboundMessage",
                      body=OutboundIn, response=OutboundOut, status=202,
                      idempotent=True, errors=(401, 403, 404, 422), tags=("hl7",)))
def send_outbound() -> tuple[Response, int]:
    """In order per destination, one in flight; AE and timeouts retried, AR dead."""
    params = body(OutboundIn)
    settings = app_runtime().settings
    organisation_id = current_caller().organisation_id
    try:
        message = params.message or hl7_outbound.render(db(), organisation_id, params.resource or "")
        row = hl7_outbound.queue(db(), settings, organisation_id=organisation_id, destination=params.destination,
                                 message=message)
    except hl7_outbound.UnknownDestinationError as exc:
        raise Problem(422, "Unprocessable Content", str(exc), "validation",
                      [FieldError("body", "destination", "not a configured destination")]) from None
    except fhir_store.ResourceNotFoundError:
        raise Problem(404, "Not Found", f"No {params.resource} (or a resource it refers to).") from None
    except (hl7_envelope.EnvelopeError, MappingError) as exc:
        raise Problem(422, "Unprocessable Content", f"The message cannot be sent: {exc}", "validation",
                      [FieldError("body", "message" if params.message else "resource", str(exc))]) from None
    return jsonify(OutboundOut.model_validate(row).model_dump(mode="json")), 202


@blueprint.get("/hl7/outbound/<int:outbound_id>")
@requires("hl7:read")
@documented(Operation("One outbound message and its delivery state",
                      audit="hl7_outbound.read", audit_resource="OutboundMessage", response=OutboundOut, errors=(401, 403, 404),
                      tags=("hl7",)))
@transactional
def get_outbound(outbound_id: int) -> Response:
    """Only the caller's organisation's messages."""
    row = db().get(OutboundMessage, outbound_id)
    if row is None or row.organisation_id != current_caller().organisation_id:
        raise Problem(404, "Not Found", f"No outbound HL7 message {outbound_id}.")
    return jsonify(OutboundOut.model_validate(row).model_dump(mode="json"))


def _fhir(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype=FHIR_JSON)


def _resource_type(resource_type: str) -> str:
    if resource_type not in fhir_store.RESOURCE_TYPES:
        raise Problem(404, "Not Found", f"Unknown FHIR resource type {resource_type!r}.")
    return resource_type


@blueprint.get("/fhir/<resource_type>/<resource_id>")
@requires("clinical:read")
@documented(Operation("Read one FHIR R4 resource (application/fhir+json)",
                      audit="fhir.read", audit_resource="FhirResource", errors=(401, 403, 404), tags=("fhir",)))
@transactional
def read_resource(resource_type: str, resource_id: str) -> Response:
    """The current version, scoped to the caller's organisation."""
    try:
        found = fhir_store.read(db(), current_caller().organisation_id, _resource_type(resource_type), resource_id)
    except fhir_store.ResourceNotFoundError:
        raise Problem(404, "Not Found", f"No {resource_type}/{resource_id}.") from None
    auditing.subject(resource_id=f"{resource_type}/{resource_id}",
                     patient_id=resource_id if resource_type == "Patient" else
                     str((found.get("subject") or found.get("patient") or {}).get("reference", "")).removeprefix(
                         "Patient/") or None)
    return _fhir(found)


@blueprint.get("/fhir/<resource_type>")
@requires("clinical:read")
@documented(Operation("Search FHIR R4 resources by patient and/or identifier (a searchset Bundle)",
                      audit="fhir.search", audit_resource="FhirResource",
                      query=FhirSearch, errors=(401, 403, 404, 422), tags=("fhir",)))
@transactional
def search_resources(resource_type: str) -> Response:
    """`?patient=<id>` and/or `?identifier=system|value`."""
    params = query(FhirSearch)
    identifier = None
    if params.identifier:
        system, bar, value = params.identifier.rpartition("|")
        identifier = (system or None, value) if bar else (None, params.identifier)
    found = fhir_store.search(db(), current_caller().organisation_id, _resource_type(resource_type),
                              patient=params.patient, identifier=identifier, limit=params.count)
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
              "entry": [{"fullUrl": f"{request.host_url}v1/fhir/{r['resourceType']}/{r['id']}", "resource": r,
                         "search": {"mode": "match"}} for r in found]}
    return _fhir(bundle)
