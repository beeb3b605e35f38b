"""SIU^S12–S15, S26: SCH (+ TQ1, AIS, AIG, AIL, AIP) to an Appointment.

The Appointment's id comes from the placer/filler appointment numbers (SCH-1/2), so a
reschedule (S13), modification (S14), cancellation (S15) or no-show (S26) updates the Appointment
a booking (S12) made. A cancellation or no-show sets that status whatever SCH-25 says.
"""

from __future__ import annotations

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import (
    Json,
    codeable,
    entity_identifier,
    identifier_key,
    integer,
    location_display,
    number,
    practitioner,
    put,
    put_all,
)
from app.fhir.er7 import Rep, Segment
from app.fhir.errors import MappingError
from app.fhir.patient import map_subject
from app.fhir.results import NOTES, note
from app.fhir.timestamps import minutes_between, plus_minutes

#: The status an event implies (other events: SCH-25, else booked).
_EVENT_STATUS = {"S15": "cancelled", "S26": "noshow"}
#: Resource segments: (name, resource field, filler-status field, Reference.type).
_RESOURCES = (("AIG", 3, 14, None), ("AIL", 3, 12, "Location"), ("AIP", 3, 12, "Practitioner"))


def map_siu(ctx: Context) -> None:
    """SIU: one Appointment with the Patient, AIP practitioners, AIL locations, AIG resources."""
    at, sch = next(((i, s) for i, s in enumerate(ctx.message.segments) if s.name == "SCH"), (0, None))
    if sch is None:
        raise MappingError(f"{ctx.message_type} has no SCH segment")
    subject = map_subject(ctx, required=False)
    numbers = (entity_identifier(sch.rep(1), "PLAC"), entity_identifier(sch.rep(2), "FILL"))
    identifiers = [i for i in numbers if i]
    key = identifier_key(identifiers[0]) if identifiers else f"message|{ctx.control_id}"
    appointment: Json = {"resourceType": "Appointment", "id": ctx.new_id("Appointment", ctx.sender, key)}
    put(appointment, "identifier", identifiers)
    appointment["status"] = _EVENT_STATUS.get(ctx.event) or codes.APPOINTMENT_STATUS.get(
        (sch.text(25) or "").upper(), "booked")
    services = [s for s in ctx.message.segments if s.name == "AIS"]
    put_all(appointment, "serviceType", [codeable(ctx, s.rep(3), "AIS-3") for s in services])
    put(appointment, "appointmentType", codeable(ctx, sch.rep(8), "SCH-8"))
    put_all(appointment, "reasonCode", [codeable(ctx, sch.rep(7), "SCH-7")])
    _schedule(ctx, sch, appointment)
    comments = [note(n) for n in ctx.message.following(at, NOTES | {"TQ1"}) if n.name == "NTE"]
    put(appointment, "comment", "\n".join(c["text"] for c in comments if c))
    participants: list[Json] = []
    if subject.patient:
        participants.append({"actor": subject.patient, "status": "accepted"})
    for name, field, status_at, kind in _RESOURCES:
        for segment in (s for s in ctx.message.segments if s.name == name):
            participants += _participant(ctx, segment, field, status_at, kind)
    if not participants:
        raise MappingError(f"{ctx.message_type} names no patient or resource (PID/AIG/AIL/AIP)")
    appointment["participant"] = participants
    ctx.add(appointment)


def _schedule(ctx: Context, sch: Segment, appointment: Json) -> None:
    """start/end from TQ1-7/8, else SCH-11.4/5, else AIS-4 plus the AIS-7/8 (or SCH-9/10) duration."""
    tq1 = ctx.message.first("TQ1")
    timing = sch.rep(11)
    candidates = [(tq1.text(7), tq1.text(8), "TQ1-7/8")] if tq1 else []
    candidates += [(timing.text(4), timing.text(5), "SCH-11")] if timing else []
    ais = ctx.message.first("AIS")
    candidates += [(ais.text(4), None, "AIS-4")] if ais else []
    start = end = None
    for first, last, where in candidates:
        start = ctx.when(first, where, "instant")
        if start:
            end = ctx.when(last, where, "instant")
            break
    if start and not end:
        minutes = (_duration(ais.text(7), ais.rep(8)) if ais else None) or _duration(sch.text(9), sch.rep(10))
        end = plus_minutes(start, minutes) if minutes else None
    if start and end and minutes_between(start, end) >= 0:
        appointment["start"], appointment["end"] = start, end
        put(appointment, "minutesDuration", integer(str(minutes_between(start, end)), minimum=1))
    elif appointment["status"] not in ("proposed", "cancelled", "waitlist"):
        ctx.warn("SCH/TQ1/AIS: no usable start and end, omitted")


def _duration(amount: str | None, units: Rep | None) -> float | None:
    value = number(amount)
    unit = ((units.text(1) if units else None) or "min").lower()
    factor = codes.MINUTES_PER_UNIT.get(unit)
    return value * factor if value is not None and factor else None


def _participant(ctx: Context, segment: Segment, field: int, status_at: int, kind: str | None) -> list[Json]:
    rep = segment.rep(field)
    if rep is None:
        return []
    if kind == "Practitioner":
        actor = practitioner(rep)
    else:
        label = location_display(rep) if kind == "Location" else (rep.text(2) or rep.text(1))
        actor = {"display": label} if label else None
        if actor and kind:
            actor["type"] = kind
    if actor is None:
        return []
    status = codes.PARTICIPANT_STATUS.get((segment.text(status_at) or "").upper(), "accepted")
    participant: Json = {"actor": actor, "status": status}
    if segment.name in ("AIG", "AIP"):
        put_all(participant, "type", [codeable(ctx, segment.rep(4), f"{segment.name}-4")])
    return [participant]
