"""RDE^O11 to MedicationRequest and RAS^O17 to MedicationAdministration (FHIR-Converter's choices)."""

from __future__ import annotations

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import (
    Json,
    codeable,
    entity_identifier,
    integer,
    number,
    practitioner,
    put,
    put_all,
    quantity,
    table_code,
)
from app.fhir.er7 import Segment
from app.fhir.errors import MappingError
from app.fhir.immunization import administration_status, dose, required_code, required_time
from app.fhir.orders import (
    Span,
    first_in,
    order_groups,
    order_identifiers,
    order_key,
    priority,
    request_status,
    requester,
    timing,
)
from app.fhir.patient import Subject, map_subject
from app.fhir.results import NOTES, note

_ROUTE = frozenset({"RXR"})


def map_rde(ctx: Context) -> None:
    """RDE^O11: a MedicationRequest per ORC group, from its RXE (and the RXR/TQ1 that follow it)."""
    subject = map_subject(ctx, required=True)
    groups = order_groups(ctx)
    if not groups:
        raise MappingError("RDE^O11 has no ORC segment")
    for ordinal, span in enumerate(groups, 1):
        ctx.add(medication_request(ctx, span, subject, ordinal))


def map_ras(ctx: Context) -> None:
    """RAS^O17: a MedicationAdministration per RXA of each ORC group."""
    subject = map_subject(ctx, required=True)
    count = 0
    for ordinal, span in enumerate(order_groups(ctx), 1):
        orc = ctx.message.segments[span[0]]
        for index in range(*span):
            if ctx.message.segments[index].name == "RXA":
                count += 1
                ctx.add(medication_administration(ctx, index, orc, subject, f"ORC{ordinal}/RXA{count}"))
    if count == 0:
        raise MappingError("RAS^O17 has no ORC/RXA segments")


def medication_request(ctx: Context, span: Span, subject: Subject, ordinal: int) -> Json:
    """MedicationRequest: medication RXE-2, dose RXE-3/4/5, rate RXE-23/24, route RXR-1, timing TQ1."""
    orc = ctx.message.segments[span[0]]
    found = first_in(ctx, span, "RXE")
    if found is None:
        raise MappingError("RDE^O11 order group has no RXE segment")
    at, rxe = found
    key = order_key(ctx, orc, None, f"ORC{ordinal}")
    request: Json = {"resourceType": "MedicationRequest", "id": ctx.new_id("MedicationRequest", key)}
    put_all(request, "identifier", order_identifiers(orc, None))
    request["status"] = request_status(orc, codes.MEDICATION_STATUS, codes.MEDICATION_CONTROL)
    request["intent"] = "order"
    request["medicationCodeableConcept"] = required_code(ctx, rxe, 2)
    request["subject"] = subject.patient
    put(request, "encounter", subject.encounter)
    put(request, "authoredOn", ctx.field_when(orc, 9))
    put(request, "requester", requester(orc) or practitioner(rxe.rep(13)))
    tq1 = (first_in(ctx, span, "TQ1", after=at) or first_in(ctx, span, "TQ1") or (0, None))[1]
    put(request, "priority", priority(tq1.text(9) if tq1 else None))
    rxr = (first_in(ctx, span, "RXR", after=at) or first_in(ctx, span, "RXR") or (0, None))[1]
    put_all(request, "dosageInstruction", [_dosage(ctx, rxe, rxr, tq1)])
    put(request, "dispenseRequest", _dispense(rxe))
    put_all(request, "note", [note(n) for n in ctx.message.following(at, NOTES)])
    return request


def medication_administration(ctx: Context, index: int, orc: Segment, subject: Subject,
                              position: str) -> Json:
    """MedicationAdministration: medication RXA-5, time RXA-3(/4), dose RXA-6/7, route RXR-1.

    Keyed by the order (placer/filler number) and the RXA-1/RXA-2 sub-id counters, or by its
    position when the order has no number.
    """
    rxa = ctx.message.segments[index]
    key = order_key(ctx, orc, None, position)
    counters = f"{rxa.text(1) or ''}/{rxa.text(2) or ''}"
    given: Json = {"resourceType": "MedicationAdministration",
                   "id": ctx.new_id("MedicationAdministration", key, "RXA", counters)}
    given["status"] = administration_status(rxa, not_done="not-done")
    if given["status"] == "not-done":
        put_all(given, "statusReason", [codeable(ctx, rxa.rep(18), "RXA-18")])
    given["medicationCodeableConcept"] = required_code(ctx, rxa, 5)
    given["subject"] = subject.patient
    put(given, "context", subject.encounter)
    start, end = required_time(ctx, rxa, 3), ctx.field_when(rxa, 4)
    if end and end != start:
        given["effectivePeriod"] = {"start": start, "end": end}
    else:
        given["effectiveDateTime"] = start
    put_all(given, "performer", [{"actor": a} for a in map(practitioner, rxa.reps(10)) if a])
    put_all(given, "reasonCode", [codeable(ctx, r, "RXA-19") for r in rxa.reps(19)])
    placer = entity_identifier(orc.rep(2), "PLAC")
    put(given, "request", {"type": "MedicationRequest", "identifier": placer} if placer else None)
    rxr = next(iter(ctx.message.following(index, _ROUTE)), None)
    dosage: Json = {}
    put(dosage, "site", table_code(rxr.rep(2), "0163") if rxr else None)
    put(dosage, "route", table_code(rxr.rep(1), "0162") if rxr else None)
    put(dosage, "method", table_code(rxr.rep(4), "0165") if rxr else None)
    put(dosage, "dose", dose(ctx, rxa))
    put(given, "dosage", dosage)
    return given


def _dosage(ctx: Context, rxe: Segment, rxr: Segment | None, tq1: Segment | None) -> Json | None:
    dosage: Json = {}
    lines = [r.text(2) or r.text(1) for r in rxe.reps(7)]
    put(dosage, "text", "\n".join(line for line in lines if line))
    put(dosage, "timing", timing(ctx, tq1))
    if rxr is not None:
        put(dosage, "site", table_code(rxr.rep(2), "0163"))
        put(dosage, "route", table_code(rxr.rep(1), "0162"))
        put(dosage, "method", table_code(rxr.rep(4), "0165"))
    low, high, units = number(rxe.text(3)), number(rxe.text(4)), rxe.rep(5)
    amount: Json = {}
    single = low if low is not None else high
    if low is not None and high is not None and high != low:
        amount["doseRange"] = {"low": quantity(low, units), "high": quantity(high, units)}
    elif single is not None:
        amount["doseQuantity"] = quantity(single, units)
    rate = number(rxe.text(23))
    put(amount, "rateQuantity", quantity(rate, rxe.rep(24)) if rate is not None else None)
    put_all(dosage, "doseAndRate", [amount])
    return dosage or None


def _dispense(rxe: Segment) -> Json | None:
    dispense: Json = {}
    amount = number(rxe.text(10))
    put(dispense, "quantity", quantity(amount, rxe.rep(11)) if amount is not None else None)
    refills = integer(rxe.text(12))
    if refills is not None:
        dispense["numberOfRepeatsAllowed"] = refills
    return dispense or None
