"""ORM^O01: each ORC/OBR order to a ServiceRequest, its OBX to supporting Observations."""

from __future__ import annotations

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import Json, codeable, put, put_all
from app.fhir.errors import MappingError
from app.fhir.orders import (
    Span,
    first_in,
    order_groups,
    order_identifiers,
    order_key,
    priority,
    request_status,
    requester,
)
from app.fhir.patient import Subject, map_subject
from app.fhir.results import NOTES, note, observation


def map_orm(ctx: Context) -> None:
    """ORM^O01: a ServiceRequest per ORC group (code from its OBR-4), OBX as supportingInfo."""
    subject = map_subject(ctx, required=True)
    groups = order_groups(ctx)
    if not groups:
        raise MappingError("ORM^O01 has no ORC segment")
    for ordinal, span in enumerate(groups, 1):
        service_request(ctx, span, subject, ordinal, with_observations=True)


def service_request(ctx: Context, span: Span, subject: Subject, ordinal: int, *,
                    with_observations: bool) -> Json:
    """Add the ServiceRequest of one ORC group (and, if asked, its OBX); return a reference to it."""
    orc = ctx.message.segments[span[0]]
    found = first_in(ctx, span, "OBR")
    at, obr = found if found else (span[0], None)
    key = order_key(ctx, orc, obr, f"ORC{ordinal}")
    request: Json = {"resourceType": "ServiceRequest", "id": ctx.new_id("ServiceRequest", key)}
    put_all(request, "identifier", order_identifiers(orc, obr))
    request["status"] = request_status(orc, codes.REQUEST_STATUS, codes.REQUEST_CONTROL)
    request["intent"] = "order"
    put(request, "code", codeable(ctx, obr.rep(4), "OBR-4") if obr else None)
    request["subject"] = subject.patient
    put(request, "encounter", subject.encounter)
    tq1 = (first_in(ctx, span, "TQ1") or (0, None))[1]
    quantity_timing = obr.rep(27) if obr else None
    start = tq1.text(7) if tq1 else None
    start = start or (quantity_timing.text(4) if quantity_timing else None) or (obr.text(6) if obr else None)
    put(request, "occurrenceDateTime", ctx.when(start, "TQ1-7/OBR-27/OBR-6"))
    put(request, "priority", priority(tq1.text(9) if tq1 else None,
                                      quantity_timing.text(6) if quantity_timing else None))
    put(request, "authoredOn", ctx.field_when(orc, 9))
    put(request, "requester", requester(orc, obr))
    put_all(request, "reasonCode", [codeable(ctx, r, "OBR-31") for r in obr.reps(31)] if obr else [])
    notes = ctx.message.following(span[0], NOTES) + (ctx.message.following(at, NOTES) if obr else [])
    put_all(request, "note", [note(n) for n in notes])
    ref = ctx.add(request)
    if with_observations:
        _supporting(ctx, span, subject, request)
    return ref


def _supporting(ctx: Context, span: Span, subject: Subject, request: Json) -> None:
    for index in range(*span):
        if ctx.message.segments[index].name != "OBX":
            continue
        based_on = {"basedOn": [{"reference": f"ServiceRequest/{request['id']}"}]}
        obs = observation(ctx, index, request["id"], subject, extra=based_on)
        request.setdefault("supportingInfo", []).append(ctx.add(obs))
