"""Medication administrations: submit (one or a batch), read, correct; a patient's MAR; safety events."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from pydantic import ValidationError
from sqlalchemy.exc import DataError, IntegrityError

from app.api import administration_schemas as s
from app.api import auditing
from app.api.auth import current_caller, requires
from app.api.clinical import guarded
from app.api.idempotency import db, idempotent, transactional
from app.api.openapi import Operation, documented
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import FieldError, Problem, from_validation
from app.api.validation import body, query
from app.models import Administration, Job, SafetyEvent
from app.services import administrations as service
from app.services import clinical
from workers.medication_metrics import record_conflict

log = logging.getLogger(__name__)
blueprint = Blueprint("administrations", __name__, url_prefix="/v1")
_TAGS = ("administrations",)


def _receive(record: s.AdministrationIn) -> service.Received:
    caller = current_caller()
    received: service.Received = guarded(lambda: service.receive(
        db(), record.model_dump(), organisation_id=caller.organisation_id, api_client_id=caller.client_id,
        request_id=g.get("request_id")))
    if received.arrival == "conflict":
        record_conflict()
    return received


def _conflict(received: service.Received) -> Response:
    # Returned, not raised: the flag on the stored record must commit with this answer.
    return Problem(422, "Unprocessable Content", "This record_id was already received with different content; "
                   "the stored record is unchanged and the resend is flagged for review.", "record-id-conflict",
                   [FieldError("body", "record_id", "already received with different content")],
                   extensions={"administration_id": received.administration.id}).to_response()


def _out(adm: Administration) -> dict[str, Any]:
    return s.AdministrationOut.model_validate(adm).model_dump(mode="json")


def _job(adm: Administration) -> s.JobRef | None:
    job = db().get(Job, adm.job_id) if adm.job_id else None
    return s.JobRef(id=job.id, status=job.status) if job else None


def _links(adm: Administration) -> dict[str, str]:
    links = {"self": url_for("administrations.get_administration", administration_id=adm.id)}
    if adm.job_id:
        links["job"] = url_for("jobs.get_job", job_id=adm.job_id)
    return links


@blueprint.post("/administrations")
@requires("administrations:write")
@idempotent(required=True)
@documented(Operation("Record that a dose was given (decided on the critical queue)",
                      audit="administration.create", audit_resource="Administration", body=s.AdministrationIn,
                      response=s.ArrivalOut, status=202, idempotent=True, idempotency_required=True,
                      errors=(401, 403, 422), tags=_TAGS))
def submit_administration() -> tuple[Response, int, dict[str, str]] | Response:
    """202 once the record and its job are committed; 200 if this record was received before."""
    received = _receive(body(s.AdministrationIn))
    if received.arrival == "conflict":
        return _conflict(received)
    adm = received.administration
    auditing.subject(resource_id=adm.id, patient_id=adm.patient_id)
    out = s.ArrivalOut(arrival=received.arrival, administration=s.AdministrationOut.model_validate(adm),
                       job=_job(adm), links=_links(adm))
    status = 202 if received.arrival == "accepted" else 200
    return jsonify(out.model_dump(mode="json")), status, {"Location": _links(adm)["self"]}


@blueprint.post("/administrations/batch")
@requires("administrations:write")
@idempotent()
@documented(Operation("Sync up to 500 records from an offline device; each gets its own result",
                      audit="administration.create_batch", audit_resource="Administration",
                      body=s.BatchIn, response=s.BatchOut, idempotent=True, errors=(401, 403), tags=_TAGS))
def submit_batch() -> Response:
    """Receive each record on its own: one bad record never rejects the others; resending is harmless."""
    batch = body(s.BatchIn)
    # In record-id order, so two batches sharing records lock them in one order (no deadlock).
    order = sorted(range(len(batch.records)), key=lambda i: str(batch.records[i].get("record_id")))
    done = {i: _batch_item(i, batch.records[i]) for i in order}
    results = [done[i] for i in range(len(batch.records))]
    counts = {kind: sum(r.result == kind for r in results) for kind in ("accepted", "already_recorded", "rejected")}
    return jsonify(s.BatchOut(results=results, counts=counts).model_dump(mode="json"))


def _batch_item(index: int, raw: dict[str, object]) -> s.BatchResult:
    record_id = str(raw.get("record_id")) if raw.get("record_id") is not None else None
    try:
        record = s.AdministrationIn.model_validate(raw)
    except ValidationError as exc:
        errors = [e.__dict__ for e in from_validation(exc, f"body.records[{index}]").errors]
        return s.BatchResult(index=index, record_id=record_id, result="rejected", errors=errors)
    try:
        with db().begin_nested():
            received = _receive(record)
    except Problem as problem:
        return s.BatchResult(index=index, record_id=record_id, result="rejected",
                             errors=[e.__dict__ for e in problem.errors])
    except (DataError, IntegrityError):  # this record only: its savepoint is rolled back
        log.warning("Batch record %s: refused by the database", index)
        return s.BatchResult(index=index, record_id=record_id, result="rejected",
                             errors=[{"location": f"body.records[{index}]", "field": "(root)",
                                      "reason": "could not be stored"}])
    adm = received.administration
    if received.arrival == "conflict":
        return s.BatchResult(index=index, record_id=record_id, result="rejected", administration_id=adm.id,
                             errors=[{"location": "body", "field": "record_id",
                                      "reason": "already received with different content"}])
    return s.BatchResult(index=index, record_id=record_id, result=received.arrival, administration_id=adm.id,
                         job_id=adm.job_id, status=adm.status)


@blueprint.get("/administrations/<int:administration_id>")
@requires("administrations:read")
@documented(Operation("An administration, its decision and its corrections",
                      audit="administration.read", audit_resource="Administration", response=s.AdministrationOut,
                      errors=(401, 403, 404), tags=_TAGS))
@transactional
def get_administration(administration_id: int) -> Response:
    """The record with its version as ETag, its job's status, its safety event and its corrections.

    A record still `received` whose job is `dead` was never decided: replay the dead letter.
    """
    caller = current_caller()
    adm = guarded(lambda: clinical.get(db(), Administration, administration_id,
                                      organisation_id=caller.organisation_id))
    event = db().query(SafetyEvent).filter_by(administration_id=adm.id).one_or_none()
    revisions = [s.RevisionOut.model_validate(r).model_dump(mode="json") for r in service.revisions(db(), adm.id)]
    job = _job(adm)
    auditing.subject(patient_id=adm.patient_id)
    response = jsonify({**_out(adm), "links": _links(adm), "revisions": revisions,
                        "job": job.model_dump() if job else None,
                        "safety_event": s.SafetyEventOut.model_validate(event).model_dump(mode="json")
                        if event else None})
    response.headers["ETag"] = f'"{adm.version}"'
    return response


@blueprint.patch("/administrations/<int:administration_id>")
@requires("administrations:write")
@documented(Operation("Correct documentation fields (If-Match: version); the original is kept",
                      audit="administration.update", audit_resource="Administration",
                      body=s.CorrectionIn, response=s.AdministrationOut, errors=(401, 403, 404, 409, 428),
                      tags=_TAGS))
@transactional
def correct_administration(administration_id: int) -> Response:
    """Apply a correction to the current version only; a stale version gets 409 and the current one."""
    correction = body(s.CorrectionIn)
    version = _expected_version(correction.version)
    changes = correction.model_dump(exclude_unset=True, exclude={"version", "reason"})
    caller = current_caller()
    try:
        adm = guarded(lambda: service.correct(db(), administration_id, changes,
                                             organisation_id=caller.organisation_id, expected_version=version,
                                             reason=correction.reason, api_client_id=caller.client_id))
    except service.StaleVersionError as exc:
        raise Problem(409, "Conflict", f"Version {version} is stale; the record is at version {exc.current}.",
                      "stale-version", extensions={"current_version": exc.current},
                      headers={"ETag": f'"{exc.current}"'}) from None
    auditing.subject(patient_id=adm.patient_id)
    response = jsonify(_out(adm))
    response.headers["ETag"] = f'"{adm.version}"'
    return response


def _expected_version(from_body: int | None) -> int:
    header = request.headers.get("If-Match")
    if header is None:
        if from_body is None:
            raise Problem(428, "Precondition Required", "Send If-Match: <version> or a version in the body.",
                          errors=[FieldError("header", "If-Match", "required")])
        return from_body
    try:
        return int(header.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise Problem(422, "Unprocessable Content", "If-Match must be a version number.", "validation",
                      [FieldError("header", "If-Match", "not a version")]) from None


@blueprint.get("/patients/<int:patient_id>/administrations")
@requires("administrations:read")
@documented(Operation("A patient's medication administration record (MAR)",
                      audit="patient.mar.read", audit_resource="Patient", query=s.MarQuery,
                      response=s.MarOut, errors=(401, 403, 404, 422), tags=_TAGS))
@transactional
def patient_mar(patient_id: int) -> Response:
    """Every administration of a patient given in [from, to), newest first."""
    params = query(s.MarQuery)
    rows = guarded(lambda: service.for_patient(db(), patient_id, organisation_id=current_caller().organisation_id,
                                              since=params.from_, until=params.to, limit=params.limit))
    return jsonify({"patient_id": patient_id, "items": [_out(a) for a in rows]})


@blueprint.get("/safety-events")
@requires("administrations:read")
@documented(Operation("Safety events (blocked doses), newest first",
                      audit="safety_event.list", audit_resource="SafetyEvent", query=s.SafetyEventQuery,
                      response=s.SafetyEventPage, errors=(401, 403, 422), tags=_TAGS))
@transactional
def list_safety_events() -> Response:
    """The organisation's safety events, filtered by type and time."""
    params = query(s.SafetyEventQuery)
    rows = service.safety_events(db(), organisation_id=current_caller().organisation_id, event_type=params.type,
                                 since=params.since, before_id=decode_cursor(params.cursor), limit=params.limit)
    cursor = encode_cursor(rows[-1].id) if len(rows) == params.limit else None
    items = [s.SafetyEventOut.model_validate(r).model_dump(mode="json") for r in rows]
    return jsonify({"items": items, "next_cursor": cursor})
