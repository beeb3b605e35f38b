"""HL7 v2 person data types (XPN, XAD, XTN) to FHIR HumanName, Address and ContactPoint."""

from __future__ import annotations

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import Json, integer, period, put
from app.fhir.er7 import Rep


def human_name(ctx: Context, rep: Rep, where: str) -> Json | None:
    """HumanName from an XPN: family FN.1, given XPN.2-3, prefix XPN.5, suffix XPN.4/6, use XPN.7."""
    name: Json = {}
    use = codes.NAME_USE.get((rep.text(7) or "").upper())
    if use:
        name["use"] = use
    family = rep.sub(1, 1)
    if family:
        name["family"] = family
    given = [g for g in (rep.text(2), rep.text(3)) if g]
    if given:
        name["given"] = given
    prefix = rep.text(5)
    if prefix:
        name["prefix"] = [prefix]
    suffix = [s for s in (rep.text(4), rep.text(6)) if s]
    if suffix:
        name["suffix"] = suffix
    if not (family or given):
        return None
    valid = period(ctx, rep.sub(10, 1) or rep.text(12), rep.sub(10, 2) or rep.text(13), where)
    if valid:
        name["period"] = valid
    return name


def address(ctx: Context, rep: Rep, where: str) -> Json | None:
    """Address from an XAD: lines XAD.1 (all of the SAD) and XAD.2, city, state, postal code, country."""
    result: Json = {}
    kind = (rep.text(7) or "").upper()
    if kind in codes.ADDRESS_USE:
        result["use"] = codes.ADDRESS_USE[kind]
    if kind in codes.ADDRESS_TYPE:
        result["type"] = codes.ADDRESS_TYPE[kind]
    street = " ".join(p for p in (rep.sub(1, s) for s in range(1, rep.subs(1) + 1)) if p)
    lines = [line for line in (street, rep.text(2)) if line]
    if lines:
        result["line"] = lines
    for key, c in (("city", 3), ("state", 4), ("postalCode", 5), ("country", 6), ("district", 9)):
        value = rep.sub(c, 1)  # county (XAD.9) and others became CWE in v2.7: keep their code
        if value:
            result[key] = value
    if not (lines or any(k in result for k in ("city", "state", "postalCode", "country"))):
        return None
    valid = period(ctx, rep.sub(12, 1) or rep.text(13), rep.sub(12, 2) or rep.text(14), where)
    if valid:
        result["period"] = valid
    return result


def contact_point(ctx: Context, rep: Rep, where: str, default_use: str | None = None) -> Json | None:
    """ContactPoint from an XTN: e-mail XTN.4, else XTN.1 or the number built from XTN.5-8."""
    equipment = (rep.text(3) or "").upper()
    email = rep.text(4)
    if equipment in ("INTERNET", "X.400") or (email and "@" in email):
        value, system = email or rep.text(1), "email"
    else:
        value, system = rep.text(1) or _dialled(rep), codes.TELECOM_SYSTEM.get(equipment, "phone")
    if not value:
        return None
    point: Json = {"system": system, "value": value}
    use = "mobile" if equipment == "CP" else codes.TELECOM_USE.get((rep.text(2) or "").upper(), default_use)
    if use:
        point["use"] = use
    put(point, "rank", integer(rep.text(18), minimum=1))
    valid = period(ctx, rep.text(13), rep.text(14), where)
    if valid:
        point["period"] = valid
    return point


def _dialled(rep: Rep) -> str | None:
    country, area, local, extension = rep.text(5), rep.text(6), rep.text(7), rep.text(8)
    if not local:
        return None
    parts = [f"+{country}" if country else None, f"({area})" if area else None, local,
             f"ext. {extension}" if extension else None]
    return " ".join(p for p in parts if p)
