"""VXU^V04: each RXA (with its RXR and OBX) to an Immunization (+ Observations part of it)."""

from __future__ import annotations

import copy

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import (
    Json,
    codeable,
    location_display,
    number,
    practitioner,
    put,
    put_all,
    quantity,
    table_code,
)
from app.fhir.er7 import Segment
from app.fhir.errors import MappingError
from app.fhir.orders import order_identifiers, order_key
from app.fhir.patient import Subject, map_subject
from app.fhir.results import observation

#: RXA-6 amount meaning "unknown" (CDC IG: historical doses).
UNKNOWN_AMOUNT = "999"
_ROUTE = frozenset({"RXR"})
#: OBX-3 LOINC codes the IG maps onto the Immunization itself.
_ELIGIBILITY, _FUNDING = "64994-7", "30963-3"


def map_vxu(ctx: Context) -> None:
    """VXU^V04: an Immunization per RXA; its OBX become Observations `partOf` the Immunization."""
    subject = map_subject(ctx, required=True)
    orc: Segment | None = None
    current: Json | None = None
    count = 0
    for index, segment in enumerate(ctx.message.segments):
        if segment.name == "ORC":
            orc, current = segment, None
        elif segment.name == "RXA":
            count += 1
            current = immunization(ctx, index, orc, subject, count)
            ctx.add(current)
        elif segment.name == "OBX" and current is not None:
            part_of = {"partOf": [{"reference": f"Immunization/{current['id']}"}]}
            obs = observation(ctx, index, current["id"], subject, extra=part_of)
            ctx.add(obs)
            _program(current, obs)
    if count == 0:
        raise MappingError("VXU^V04 has no RXA segment")


def immunization(ctx: Context, index: int, orc: Segment | None, subject: Subject, ordinal: int) -> Json:
    """Immunization from the RXA at `index`: vaccine RXA-5, date RXA-3, dose RXA-6/7, lot RXA-15.

    Keyed by its order's placer/filler number, else by its position among the message's RXA.
    """
    rxa = ctx.message.segments[index]
    key = order_key(ctx, orc, None, f"RXA{ordinal}")
    imm: Json = {"resourceType": "Immunization", "id": ctx.new_id("Immunization", key)}
    put_all(imm, "identifier", order_identifiers(orc, None))
    imm["status"] = administration_status(rxa, not_done="not-done")
    if imm["status"] == "not-done":
        put(imm, "statusReason", codeable(ctx, rxa.rep(18), "RXA-18"))
    imm["vaccineCode"] = required_code(ctx, rxa, 5)
    imm["patient"] = subject.patient
    put(imm, "encounter", subject.encounter)
    imm["occurrenceDateTime"] = required_time(ctx, rxa, 3)
    source = rxa.rep(9)
    if source is not None and source.text(1):
        imm["primarySource"] = source.text(1) == "00"
        if not imm["primarySource"]:
            put(imm, "reportOrigin", codeable(ctx, source, "RXA-9"))
    put(imm, "location", _location(rxa))
    put(imm, "manufacturer", _manufacturer(rxa))
    put(imm, "lotNumber", rxa.text(15))
    put(imm, "expirationDate", ctx.field_when(rxa, 16, "date"))
    rxr = next(iter(ctx.message.following(index, _ROUTE)), None)
    if rxr is not None:
        put(imm, "site", table_code(rxr.rep(2), "0163"))
        put(imm, "route", table_code(rxr.rep(1), "0162"))
    put(imm, "doseQuantity", dose(ctx, rxa))
    performers = [("AP", practitioner(r)) for r in rxa.reps(10)]
    performers += [("OP", practitioner(orc.rep(12)))] if orc is not None else []
    put_all(imm, "performer", [_performer(role, actor) for role, actor in performers if actor])
    if (rxa.text(20) or "").upper() == "PA":
        imm["isSubpotent"] = True
    put_all(imm, "reasonCode", [codeable(ctx, r, "RXA-19") for r in rxa.reps(19)])
    return imm


def administration_status(rxa: Segment, *, not_done: str) -> str:
    """Status from RXA-21 (action D: entered in error) and RXA-20 (RE/NA: not done)."""
    if (rxa.text(21) or "").upper() == "D":
        return "entered-in-error"
    return not_done if (rxa.text(20) or "").upper() in ("RE", "NA") else "completed"


def required_code(ctx: Context, segment: Segment, n: int) -> Json:
    """A CodeableConcept the resource cannot do without; MappingError when the field is empty."""
    concept = codeable(ctx, segment.rep(n), f"{segment.name}-{n}")
    if concept is None:
        raise MappingError(f"{segment.name}-{n} is empty")
    return concept


def required_time(ctx: Context, segment: Segment, n: int) -> str:
    """A dateTime the resource cannot do without; MappingError when missing or unparseable."""
    value = ctx.field_when(segment, n)
    if value is None:
        raise MappingError(f"{segment.name}-{n} is missing or not a valid date/time")
    return value


def dose(ctx: Context, rxa: Segment) -> Json | None:
    """Dose from RXA-6 (amount) and RXA-7 (units); none for 999 (unknown) or 0."""
    amount = rxa.text(6)
    if not amount or amount == UNKNOWN_AMOUNT:
        return None
    value = number(amount)
    if value is None:
        ctx.warn("RXA-6: not a number, dose omitted")
        return None
    return quantity(value, rxa.rep(7)) if value > 0 else None


def _performer(role: str, actor: Json | None) -> Json:
    function = {"coding": [{"system": codes.V2 + "0443", "code": role}]}
    return {"function": function, "actor": actor}


def _location(rxa: Segment) -> Json | None:
    display = location_display(rxa.rep(11))
    return {"type": "Location", "display": display} if display else None


def _manufacturer(rxa: Segment) -> Json | None:
    rep = rxa.rep(17)
    if rep is None or not (rep.text(1) or rep.text(2)):
        return None
    ref: Json = {"type": "Organization"}
    put(ref, "display", rep.text(2))
    if rep.text(1):
        system = codes.coding_system(rep.text(3) or "MVX")
        ref["identifier"] = {"system": system, "value": rep.text(1)} if system else {"value": rep.text(1)}
    return ref


def _program(imm: Json, obs: Json) -> None:
    code = next((c.get("code") for c in obs["code"].get("coding", [])), None)
    value = obs.get("valueCodeableConcept")
    if value and code == _ELIGIBILITY:
        imm.setdefault("programEligibility", []).append(copy.deepcopy(value))
    elif value and code == _FUNDING:
        imm["fundingSource"] = copy.deepcopy(value)
