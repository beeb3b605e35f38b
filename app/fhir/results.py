"""OBX to Observation, and ORU^R01 (OBR with its OBX) to DiagnosticReport + Observations."""

from __future__ import annotations

import re

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import Json, code_token, codeable, number, put, put_all, quantity, table_code
from app.fhir.er7 import Rep, Segment
from app.fhir.orders import order_identifiers, order_key
from app.fhir.patient import Subject, map_subject
from app.fhir.timestamps import convert_time

NOTES = frozenset({"NTE"})
_CODED = frozenset({"CE", "CWE", "CNE", "CF"})
_UNMAPPED = frozenset({"ED", "RP", "NA", "MA"})
_RANGE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*")
_BOUND = re.compile(r"\s*(<=|>=|<|>)\s*(\d+(?:\.\d+)?)\s*")


def map_oru(ctx: Context) -> None:
    """ORU^R01: a DiagnosticReport per OBR, an Observation per OBX (in its report's result)."""
    subject = map_subject(ctx, required=False)
    orc: Segment | None = None
    report: Json | None = None
    for index, segment in enumerate(ctx.message.segments):
        if segment.name == "ORC":
            orc = segment
        elif segment.name == "OBR":
            report = diagnostic_report(ctx, segment, orc, subject)
            ctx.add(report)
            orc = None
        elif segment.name == "OBX":
            scope = report["id"] if report else subject.key()
            effective = report.get("effectiveDateTime") if report else None
            ref = ctx.add(observation(ctx, index, scope, subject, effective=effective))
            if report is not None:
                report.setdefault("result", []).append(ref)


def diagnostic_report(ctx: Context, obr: Segment, orc: Segment | None, subject: Subject) -> Json:
    """DiagnosticReport from an OBR: code OBR-4, status OBR-25, effective OBR-7/8, issued OBR-22."""
    key = order_key(ctx, orc, obr, f"OBR{obr.text(1) or ''}")
    report: Json = {"resourceType": "DiagnosticReport", "id": ctx.new_id("DiagnosticReport", key)}
    put_all(report, "identifier", order_identifiers(orc, obr))
    report["status"] = codes.REPORT_STATUS.get((obr.text(25) or "").upper(), "unknown")
    put_all(report, "category", [table_code(obr.rep(24), "0074")])
    report["code"] = _required_code(ctx, obr.rep(4), "OBR-4")
    put(report, "subject", subject.patient)
    put(report, "encounter", subject.encounter)
    start, end = ctx.field_when(obr, 7), ctx.field_when(obr, 8)
    if start and end:
        report["effectivePeriod"] = {"start": start, "end": end}
    else:
        put(report, "effectiveDateTime", start or end)
    put(report, "issued", ctx.field_when(obr, 22, "instant"))
    return report


def observation(ctx: Context, index: int, scope: str, subject: Subject, *, effective: str | None = None,
                extra: Json | None = None) -> Json:
    """Observation from the OBX at `index`, keyed by `scope` + OBX-1 set id (+ OBX-4 sub-id)."""
    obx = ctx.message.segments[index]
    set_id = obx.text(1) or f"#{index}"
    obs: Json = {"resourceType": "Observation",
                 "id": ctx.new_id("Observation", scope, "OBX", set_id, obx.text(4) or "")}
    obs["status"] = codes.OBSERVATION_STATUS.get((obx.text(11) or "").upper(), "unknown")
    obs.update(extra or {})
    obs["code"] = _required_code(ctx, obx.rep(3), "OBX-3")
    put(obs, "subject", subject.patient)
    put(obs, "encounter", subject.encounter)
    put(obs, "effectiveDateTime", ctx.field_when(obx, 14) or effective)
    _value(ctx, obx, obs)
    put_all(obs, "interpretation", [_interpretation(r) for r in obx.reps(8)])
    put_all(obs, "referenceRange", [_reference_range(obx)])
    put(obs, "method", codeable(ctx, obx.rep(17), "OBX-17"))
    put_all(obs, "note", [note(n) for n in ctx.message.following(index, NOTES)])
    return obs


def note(nte: Segment) -> Json | None:
    """Annotation from an NTE-3 comment (repetitions on separate lines)."""
    text = "\n".join(r.literal() for r in nte.reps(3))
    return {"text": text} if text.strip() else None


def _required_code(ctx: Context, rep: Rep | None, where: str) -> Json:
    concept = codeable(ctx, rep, where)
    if concept is None:
        ctx.warn(f"{where}: empty code, 'unknown' used")
        return {"text": "unknown"}
    return concept


def _value(ctx: Context, obx: Segment, obs: Json) -> None:
    kind = (obx.text(2) or "").upper()
    reps = obx.reps(5)
    if not reps:
        return
    first = reps[0]
    if len(reps) > 1 and kind in (_CODED | {"NM", "SN", "DT", "DTM", "TS", "TM"}):
        ctx.warn("OBX-5: repeated value, only the first is mapped")
    if kind == "NM":
        value = number(first.literal())
        if value is None:
            ctx.warn("OBX-5: not a number, kept as text")
            _text(obs, first.literal())
        else:
            obs["valueQuantity"] = quantity(value, obx.rep(6))
    elif kind == "SN":
        _structured_numeric(ctx, first, obx.rep(6), obs)
    elif kind in _CODED:
        put(obs, "valueCodeableConcept", codeable(ctx, first, "OBX-5"))
    elif kind in ("DT", "DTM", "TS"):
        put(obs, "valueDateTime", ctx.when(first.text(1), "OBX-5"))
    elif kind == "TM":
        converted = convert_time(first.text(1) or "")
        put(obs, "valueTime", converted.value)
        if converted.problem:
            ctx.warn(f"OBX-5: {converted.problem}")
    elif kind in _UNMAPPED:
        ctx.warn(f"OBX-5: value type {kind} not mapped")
    else:
        _text(obs, "\n".join(r.literal() for r in reps))


def _text(obs: Json, text: str) -> None:
    if text.strip():
        obs["valueString"] = text


def _structured_numeric(ctx: Context, rep: Rep, units: Rep | None, obs: Json) -> None:
    comparator, separator = rep.text(1) or "", rep.text(3) or ""
    first, second = number(rep.text(2)), number(rep.text(4))
    if first is not None and second is not None and separator in (":", "/"):
        obs["valueRatio"] = {"numerator": {"value": first}, "denominator": {"value": second}}
    elif first is not None and second is not None and separator in ("-", ""):
        obs["valueRange"] = {"low": quantity(first, units), "high": quantity(second, units)}
    elif first is not None and not separator:
        value = quantity(first, units)
        if comparator in ("<", "<=", ">=", ">"):
            value["comparator"] = comparator
        obs["valueQuantity"] = value
    else:
        ctx.warn("OBX-5: structured numeric not understood, kept as text")
        _text(obs, rep.literal())


def _interpretation(rep: Rep) -> Json | None:
    code = rep.text(1)
    if not code:
        return None
    if code.upper() in codes.INTERPRETATIONS:
        coding: Json = {"system": codes.V3_INTERPRETATION, "code": code.upper()}
    else:
        coding = {"system": codes.V2 + "0078", "code": code_token(code)}
    if rep.text(2):
        coding["display"] = rep.text(2)
    return {"coding": [coding]}


def _reference_range(obx: Segment) -> Json | None:
    """OBX-7 as text, with low/high when it reads "a-b", "<b", ">a" (bounds taken as inclusive)."""
    rep = obx.rep(7)
    text = rep.literal().strip() if rep else ""
    if not text:
        return None
    result: Json = {"text": text}
    units = obx.rep(6)
    span = _RANGE.fullmatch(text)
    bound = _BOUND.fullmatch(text)
    if span:
        low, high = number(span[1]), number(span[2])
        if low is not None and high is not None:
            result["low"], result["high"] = quantity(low, units), quantity(high, units)
    elif bound:
        value = number(bound[2])
        if value is not None:
            result["high" if bound[1].startswith("<") else "low"] = quantity(value, units)
    return result
