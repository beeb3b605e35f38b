"""ADT A01/A03/A04/A08 to Patient + Encounter (+ Observations from OBX); A40 to a Patient merge."""

from __future__ import annotations

from app.fhir.context import Context
from app.fhir.errors import MappingError
from app.fhir.patient import map_subject, patient, replaced_patient
from app.fhir.results import observation

#: Encounter.status an event implies; otherwise it follows PV1-44/45.
_EVENT_STATUS = {"A01": "in-progress", "A03": "finished", "A04": "arrived"}


def map_adt(ctx: Context) -> None:
    """ADT^A01/A03/A04/A08: the Patient, the visit's Encounter and any OBX as Observations."""
    subject = map_subject(ctx, required=True, encounter_status=_EVENT_STATUS.get(ctx.event))
    for index, segment in enumerate(ctx.message.segments):
        if segment.name == "OBX":
            ctx.add(observation(ctx, index, subject.key(), subject))


def map_merge(ctx: Context) -> None:
    """ADT^A40: each PID (survivor) with its MRG (replaced Patient), linked replaces/replaced-by."""
    segments = ctx.message.segments
    pids = [i for i, s in enumerate(segments) if s.name == "PID"]
    if not pids:
        raise MappingError("ADT^A40 has no PID segment")
    for n, start in enumerate(pids):
        stop = pids[n + 1] if n + 1 < len(pids) else len(segments)
        mrg = next((s for s in segments[start:stop] if s.name == "MRG"), None)
        if mrg is None:
            raise MappingError("ADT^A40 patient group has no MRG segment")
        survivor = patient(ctx, segments[start])
        replaced = replaced_patient(ctx, survivor, mrg)
        ctx.add(survivor)
        if replaced is not None:
            ctx.add(replaced)
