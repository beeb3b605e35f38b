"""Set-up endpoints for the clinical domain: patients, allergies, medications, prescriptions, inventory,
immunizations (requirements, doses, exemptions), appointments, and the organisation's own settings.

Each resource gets the same four routes (create, list, read, update), scoped to the caller's
organisation: `clinical:write` to change, `clinical:read` to read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, url_for
from pydantic import BaseModel

from app.api import auditing
from app.api import care_schemas as c
from app.api import clinical_schemas as s
from app.api.auth import current_caller, requires
from app.api.idempotency import db, transactional
from app.api.openapi import Operation, documented
from app.api.pagination import decode_cursor, encode_cursor
from app.api.problems import FieldError, Problem
from app.api.validation import body, query
from app.models import (
    Allergy,
    Appointment,
    Immunization,
    ImmunizationExemption,
    ImmunizationRequirement,
    InventoryLot,
    Medication,
    Organisation,
    Patient,
    Prescription,
)
from app.services import clinical

blueprint = Blueprint("clinical", __name__, url_prefix="/v1")


@dataclass(frozen=True)
class Resource:
    """One table exposed as a collection: its path, model and the shapes in and out."""

    path: str
    singular: str
    model: type[Any]
    create: type[BaseModel]
    patch: type[BaseModel]
    out: type[BaseModel]
    filters: type[s.PageQuery] = s.PageQuery
    patient_data: bool = True  # every request is audited (patients' data, PHI)


RESOURCES = (
    Resource("patients", "patient", Patient, s.PatientIn, s.PatientPatch, s.PatientOut),
    Resource("allergies", "allergy", Allergy, s.AllergyIn, s.AllergyPatch, s.AllergyOut, s.AllergyQuery),
    Resource("medications", "medication", Medication, s.MedicationIn, s.MedicationPatch, s.MedicationOut,
             patient_data=False),
    Resource("prescriptions", "prescription", Prescription, s.PrescriptionIn, s.PrescriptionPatch, s.PrescriptionOut,
             s.PrescriptionQuery),
    Resource("inventory-lots", "inventory_lot", InventoryLot, s.InventoryLotIn, s.InventoryLotPatch, s.InventoryLotOut,
             s.InventoryLotQuery, patient_data=False),
    Resource("immunization-requirements", "immunization_requirement", ImmunizationRequirement, c.RequirementIn,
             c.RequirementPatch, c.RequirementOut, patient_data=False),
    Resource("immunizations", "immunization", Immunization, c.ImmunizationIn, c.ImmunizationPatch, c.ImmunizationOut,
             c.PatientQuery),
    Resource("immunization-exemptions", "immunization_exemption", ImmunizationExemption, c.ExemptionIn,
             c.ExemptionPatch, c.ExemptionOut, c.PatientQuery),
    Resource("appointments", "appointment", Appointment, c.AppointmentIn, c.AppointmentPatch, c.AppointmentOut,
             c.PatientQuery),
)


def page_model(resource: Resource) -> type[BaseModel]:
    """The list response of a resource: items and the next cursor."""
    return type(f"{resource.out.__name__}Page", (BaseModel,),
                {"__annotations__": {"items": list[resource.out], "next_cursor": str | None}})  # type: ignore[name-defined]


def _out(resource: Resource, row: Any) -> dict[str, Any]:
    return resource.out.model_validate(row).model_dump(mode="json")


def _one(resource: Resource, row: Any) -> dict[str, Any]:
    """One row as JSON; the audit record learns which row and patient the request touched. (A list's
    record names a patient only when the list is filtered by one.)"""
    patient = row.id if resource.model is Patient else getattr(row, "patient_id", None)
    auditing.subject(resource_id=row.id, patient_id=patient)
    return _out(resource, row)


def guarded(run: Callable[[], Any]) -> Any:
    """Service errors as problems: 404 unknown row, 422 bad reference, 409 duplicate identifier."""
    try:
        return run()
    except clinical.RecordNotFoundError:
        raise Problem(404, "Not Found", "No such record.") from None
    except clinical.InvalidReferenceError as exc:
        raise Problem(422, "Unprocessable Content", "A referenced record does not exist.", "validation",
                      [FieldError("body", exc.field, "no such record in this organisation")]) from None
    except clinical.DuplicateRecordError as exc:
        raise Problem(409, "Conflict", f"A record with this identifier already exists ({exc.constraint}).",
                      "duplicate-record") from None


def _register(resource: Resource) -> None:
    name, tags = resource.singular, (resource.path,)
    noun = name.replace("_", " ")

    def audit(verb: str) -> dict[str, Any]:
        return {"audit": f"{name}.{verb}", "audit_resource": resource.model.__name__} if resource.patient_data else {}

    @requires("clinical:write")
    @documented(Operation(f"Create a {noun}", body=resource.create, response=resource.out, status=201,
                          errors=(401, 403, 409), tags=tags, **audit("create")))
    @transactional
    def create() -> tuple[Response, int, dict[str, str]]:
        values = body(resource.create).model_dump()
        row = guarded(lambda: clinical.create(db(), resource.model, values,
                                               organisation_id=current_caller().organisation_id))
        location = url_for(f"clinical.get_{name}", row_id=row.id)
        return jsonify(_one(resource, row)), 201, {"Location": location}

    @requires("clinical:read")
    @documented(Operation(f"List {resource.path}, newest first", query=resource.filters,
                          response=page_model(resource), errors=(401, 403, 422), tags=tags, **audit("list")))
    @transactional
    def list_() -> Response:
        params = query(resource.filters)
        filters = params.model_dump(exclude={"cursor", "limit"})
        rows = clinical.page(db(), resource.model, organisation_id=current_caller().organisation_id,
                             filters=filters, before_id=decode_cursor(params.cursor), limit=params.limit)
        cursor = encode_cursor(rows[-1].id) if len(rows) == params.limit else None
        return jsonify({"items": [_out(resource, r) for r in rows], "next_cursor": cursor})

    @requires("clinical:read")
    @documented(Operation(f"One {noun}", response=resource.out, errors=(401, 403, 404), tags=tags, **audit("read")))
    @transactional
    def get(row_id: int) -> Response:
        row = guarded(lambda: clinical.get(db(), resource.model, row_id,
                                            organisation_id=current_caller().organisation_id))
        return jsonify(_one(resource, row))

    @requires("clinical:write")
    @documented(Operation(f"Change fields of a {noun}", body=resource.patch, response=resource.out,
                          errors=(401, 403, 404, 409), tags=tags, **audit("update")))
    @transactional
    def patch(row_id: int) -> Response:
        values = body(resource.patch).model_dump(exclude_unset=True)
        row = guarded(lambda: clinical.update(db(), resource.model, row_id, values,
                                               organisation_id=current_caller().organisation_id))
        return jsonify(_one(resource, row))

    base = f"/{resource.path}"
    blueprint.add_url_rule(base, f"create_{name}", create, methods=["POST"])
    blueprint.add_url_rule(base, f"list_{resource.path.replace('-', '_')}", list_, methods=["GET"])
    blueprint.add_url_rule(f"{base}/<int:row_id>", f"get_{name}", get, methods=["GET"])
    blueprint.add_url_rule(f"{base}/<int:row_id>", f"patch_{name}", patch, methods=["PATCH"])


for _resource in RESOURCES:
    _register(_resource)


@blueprint.get("/organisation")
@requires("clinical:read")
@documented(Operation("The caller's organisation and its settings", response=c.OrganisationOut,
                      errors=(401, 403), tags=("organisation",)))
@transactional
def get_organisation() -> Response:
    """The caller's organisation."""
    organisation = db().get(Organisation, current_caller().organisation_id)
    return jsonify(c.OrganisationOut.model_validate(organisation).model_dump(mode="json"))


@blueprint.patch("/organisation")
@requires("admin")
@documented(Operation("Change the organisation's settings (its time zone: reminder times are local)",
                      audit="organisation.update", audit_resource="Organisation", body=c.OrganisationPatch,
                      response=c.OrganisationOut, errors=(401, 403), tags=("organisation",)))
@transactional
def patch_organisation() -> Response:
    """Set the caller's organisation's time zone."""
    organisation = db().get(Organisation, current_caller().organisation_id, with_for_update=True)
    assert organisation is not None
    organisation.timezone = body(c.OrganisationPatch).timezone
    return jsonify(c.OrganisationOut.model_validate(organisation).model_dump(mode="json"))
