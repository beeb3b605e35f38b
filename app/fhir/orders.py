"""What order-bearing messages share: ORC/OBR identifiers, natural keys, status, priority, timing."""

from __future__ import annotations

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import Json, entity_identifier, identifier_key, period, practitioner, sub_codeable
from app.fhir.er7 import Segment

Span = tuple[int, int]


def order_identifiers(orc: Segment | None, obr: Segment | None) -> list[Json]:
    """Placer (ORC-2/OBR-2) and filler (ORC-3/OBR-3) order numbers as typed Identifiers."""
    found: list[Json] = []
    for n, kind in ((2, "PLAC"), (3, "FILL")):
        rep = (obr.rep(n) if obr else None) or (orc.rep(n) if orc else None)
        ident = entity_identifier(rep, kind)
        if ident:
            found.append(ident)
    return found


def order_key(ctx: Context, orc: Segment | None, obr: Segment | None, fallback: str) -> str:
    """The natural key of an order: its placer number, else its filler number, else the message."""
    for ident in order_identifiers(orc, obr):
        kind = ident["type"]["coding"][0]["code"]
        return f"{ctx.sender}|{kind}|{identifier_key(ident)}"
    return f"{ctx.sender}|message|{ctx.control_id}|{fallback}"


def request_status(orc: Segment | None, by_status: dict[str, str], by_control: dict[str, str]) -> str:
    """Request status from ORC-5 (order status), else ORC-1 (order control), else unknown."""
    if orc is None:
        return "unknown"
    status = by_status.get((orc.text(5) or "").upper())
    return status or by_control.get((orc.text(1) or "").upper(), "unknown")


def priority(*candidates: str | None) -> str | None:
    """The first candidate that is a known v2 priority code, as a FHIR request priority."""
    for code in candidates:
        mapped = codes.PRIORITY.get((code or "").upper())
        if mapped:
            return mapped
    return None


def requester(orc: Segment | None, obr: Segment | None = None) -> Json | None:
    """The ordering provider (ORC-12, else OBR-16) as a display Reference."""
    return (practitioner(orc.rep(12)) if orc else None) or (practitioner(obr.rep(16)) if obr else None)


def timing(ctx: Context, tq1: Segment | None) -> Json | None:
    """Timing from a TQ1: repeat pattern TQ1-3 as code, TQ1-7/8 as bounds."""
    if tq1 is None:
        return None
    result: Json = {}
    bounds = period(ctx, tq1.text(7), tq1.text(8), "TQ1-7")
    if bounds:
        result["repeat"] = {"boundsPeriod": bounds}
    code = sub_codeable(tq1.rep(3), 1, codes.V2 + "0335")
    if code:
        result["code"] = code
    return result or None


def order_groups(ctx: Context) -> list[Span]:
    """(start, stop) segment positions of each ORC group, stop exclusive."""
    starts = [i for i, s in enumerate(ctx.message.segments) if s.name == "ORC"]
    stops = starts[1:] + [len(ctx.message.segments)]
    return list(zip(starts, stops, strict=False))


def first_in(ctx: Context, span: Span, name: str, after: int | None = None) -> tuple[int, Segment] | None:
    """The first segment called `name` in a span (optionally only after a position)."""
    start = span[0] if after is None else after + 1
    for index in range(start, span[1]):
        segment = ctx.message.segments[index]
        if segment.name == name:
            return index, segment
    return None
