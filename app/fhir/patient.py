"""PID to Patient, MRG to the Patient it replaces, PV1 to Encounter: the subject of every message."""

from __future__ import annotations

from dataclasses import dataclass

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import (
    Json,
    codeable,
    identifier,
    identifier_key,
    integer,
    location_display,
    practitioner,
    put,
    put_all,
    table_code,
)
from app.fhir.er7 import Segment
from app.fhir.errors import MappingError
from app.fhir.people import address, contact_point, human_name

#: PV1 fields naming a practitioner → v3 ParticipationType.
_PARTICIPANTS = ((7, "ATND", "attender"), (8, "REF", "referrer"), (9, "CON", "consultant"),
                 (17, "ADM", "admitter"))


@dataclass(frozen=True)
class Subject:
    """The message's Patient and Encounter references ("Patient/<id>"; None when it has none)."""

    patient_reference: str | None
    encounter_reference: str | None

    @property
    def patient(self) -> Json | None:
        """A fresh Reference to the Patient (never shared between resources)."""
        return {"reference": self.patient_reference} if self.patient_reference else None

    @property
    def encounter(self) -> Json | None:
        """A fresh Reference to the Encounter."""
        return {"reference": self.encounter_reference} if self.encounter_reference else None

    def key(self) -> str:
        """A natural-key prefix for resources that belong to this subject."""
        return self.encounter_reference or self.patient_reference or ""


def map_subject(ctx: Context, *, required: bool, encounter_status: str | None = None) -> Subject:
    """Add the Patient (first PID) and Encounter (first PV1) to ctx; raise when PID is required."""
    pid = ctx.message.first("PID")
    if pid is None:
        if required:
            raise MappingError(f"{ctx.message_type} has no PID segment")
        return Subject(None, None)
    patient_ref = ctx.add(patient(ctx, pid))["reference"]
    pv1 = ctx.message.first("PV1")
    visit = encounter(ctx, pv1, {"reference": patient_ref}, encounter_status) if pv1 is not None else None
    return Subject(patient_ref, ctx.add(visit)["reference"] if visit else None)


def patient(ctx: Context, pid: Segment) -> Json:
    """Patient from a PID; every PID-3 identifier is kept so storage can match the Patient."""
    identifiers = patient_identifiers(ctx, pid)
    resource: Json = {"resourceType": "Patient", "id": ctx.new_id("Patient", patient_key(ctx, identifiers))}
    if ctx.patient_id is None:
        ctx.patient_id = resource["id"]
    if identifiers:
        resource["identifier"] = identifiers
    put_all(resource, "name", [human_name(ctx, r, "PID-5") for r in pid.reps(5)])
    telecom = [contact_point(ctx, r, "PID-13") for r in pid.reps(13)]
    put_all(resource, "telecom", telecom + [contact_point(ctx, r, "PID-14", "work") for r in pid.reps(14)])
    sex = pid.text(8)
    if sex and sex.upper() in codes.GENDER:
        resource["gender"] = codes.GENDER[sex.upper()]
    elif sex:
        ctx.warn("PID-8: unknown administrative sex omitted")
    put(resource, "birthDate", ctx.field_when(pid, 7, "date"))
    _deceased(ctx, pid, resource)
    put_all(resource, "address", [address(ctx, r, "PID-11") for r in pid.reps(11)])
    put(resource, "maritalStatus", _marital(pid))
    _multiple_birth(pid, resource)
    languages = [codeable(ctx, r, "PID-15", codes.V2 + "0296") for r in pid.reps(15)]
    put_all(resource, "communication", [{"language": lang} for lang in languages if lang])
    return resource


def patient_identifiers(ctx: Context, pid: Segment) -> list[Json]:
    """PID-3 identifiers first, then PID-2 and PID-4 (kept for backward compatibility), without duplicates."""
    found: list[Json] = []
    for n in (3, 2, 4):
        for rep in pid.reps(n):
            ident = identifier(rep, None, ctx, f"PID-{n}")
            if ident and ident not in found:
                found.append(ident)
    return found


def patient_key(ctx: Context, identifiers: list[Json]) -> str:
    """The natural key of a Patient: its first identifier with a system (scoped to the sender if none)."""
    with_system = [i for i in identifiers if "system" in i]
    if with_system:
        return identifier_key(with_system[0])
    if identifiers:
        return f"sender:{ctx.sender}|{identifiers[0]['value']}"
    ctx.warn("PID-3: no patient identifier, the Patient cannot be matched")
    return f"message:{ctx.sender}|{ctx.control_id}"


def replaced_patient(ctx: Context, survivor: Json, mrg: Segment) -> Json | None:
    """The Patient an A40 merges away (MRG-1), linked both ways with the surviving one."""
    identifiers = [i for i in (identifier(r, None, ctx, "MRG-1") for r in mrg.reps(1)) if i]
    if not identifiers:
        ctx.warn("MRG-1: no prior patient identifier, merge not mapped")
        return None
    old_id = ctx.new_id("Patient", patient_key(ctx, identifiers))
    survivor.setdefault("link", []).append({"other": {"reference": f"Patient/{old_id}"}, "type": "replaces"})
    return {"resourceType": "Patient", "id": old_id, "active": False, "identifier": identifiers,
            "link": [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]}


def encounter(ctx: Context, pv1: Segment, patient_ref: Json | None, status: str | None = None) -> Json | None:
    """Encounter from a PV1 keyed by the visit number PV1-19 (None when the PV1 is empty)."""
    if not any(pv1.raw(n) for n in (2, 3, 19, 44)):
        return None
    visit = identifier(pv1.rep(19), "VN")
    scope = identifier_key(visit) if visit else f"{(patient_ref or {}).get('reference')}|{ctx.control_id}"
    resource: Json = {"resourceType": "Encounter", "id": ctx.new_id("Encounter", ctx.sender, scope)}
    if visit:
        resource["identifier"] = [visit]
    period = {k: v for k, v in (("start", ctx.field_when(pv1, 44)), ("end", ctx.field_when(pv1, 45))) if v}
    resource["status"] = status or ("finished" if "end" in period else "in-progress" if period else "unknown")
    code, display = codes.ENCOUNTER_CLASS.get((pv1.text(2) or "").upper(), ("UNK", "unknown"))
    system = codes.V3_NULL_FLAVOR if code == "UNK" else codes.V3_ACT_CODE
    resource["class"] = {"system": system, "code": code, "display": display}
    put(resource, "serviceType", table_code(pv1.rep(10), "0069"))
    put(resource, "subject", patient_ref)
    participants = [_participant(pv1, n, code, text) for n, code, text in _PARTICIPANTS]
    put_all(resource, "participant", [p for group in participants for p in group])
    put(resource, "period", period or None)
    place = location_display(pv1.rep(3))
    if place:
        where_status = "completed" if resource["status"] == "finished" else "active"
        resource["location"] = [{"location": {"display": place}, "status": where_status}]
    stay = {k: v for k, v in (("admitSource", table_code(pv1.rep(14), "0023")),
                              ("dischargeDisposition", table_code(pv1.rep(36), "0112"))) if v}
    put(resource, "hospitalization", stay or None)
    return resource


def _participant(pv1: Segment, n: int, code: str, display: str) -> list[Json]:
    kind = [{"coding": [{"system": codes.V3_PARTICIPATION, "code": code, "display": display}]}]
    refs = [practitioner(r) for r in pv1.reps(n)]
    return [{"type": kind, "individual": ref} for ref in refs if ref]


def _deceased(ctx: Context, pid: Segment, resource: Json) -> None:
    died = ctx.field_when(pid, 29)
    flag = (pid.text(30) or "").upper()
    if died:
        resource["deceasedDateTime"] = died
    elif flag in ("Y", "N"):
        resource["deceasedBoolean"] = flag == "Y"


def _marital(pid: Segment) -> Json | None:
    rep = pid.rep(16)
    code = (rep.text(1) or "").upper() if rep else ""
    if code in codes.MARITAL:
        return {"coding": [{"system": codes.V3_MARITAL, "code": codes.MARITAL[code]}]}
    if code == "U":
        return {"coding": [{"system": codes.V3_NULL_FLAVOR, "code": "UNK"}]}
    return table_code(rep, "0002")


def _multiple_birth(pid: Segment, resource: Json) -> None:
    order = integer(pid.text(25))
    flag = (pid.text(24) or "").upper()
    if order is not None:
        resource["multipleBirthInteger"] = order
    elif flag in ("Y", "N"):
        resource["multipleBirthBoolean"] = flag == "Y"
