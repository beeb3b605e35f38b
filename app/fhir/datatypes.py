"""HL7 v2 composite data types (CWE, CX, EI, HD, NM, PL) to FHIR R4 data types."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.er7 import Rep

Json = dict[str, Any]
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
#: (code, display, system, version) component positions of a CWE's codings.
_CWE_TRIPLETS = ((1, 2, 3, 7), (4, 5, 6, 8), (10, 11, 12, None))


def number(raw: str | None) -> int | float | None:
    """A FHIR decimal from an NM value, or None when it is not a number."""
    if raw is None or not _NUMBER.fullmatch(raw.strip()):
        return None
    text = raw.strip()
    return float(text) if "." in text else int(text)


def integer(raw: str | None, minimum: int = 0) -> int | None:
    """A FHIR integer/unsignedInt/positiveInt from digits, or None when out of the 32-bit range."""
    if raw is None or not raw.strip().isdigit():
        return None
    value = int(raw.strip())
    return value if minimum <= value <= 2_147_483_647 else None


def code_token(value: str) -> str:
    """A value usable as a FHIR code (single inner spaces only)."""
    return " ".join(value.split())


def codeable(ctx: Context, rep: Rep | None, where: str, default_system: str | None = None) -> Json | None:
    """CodeableConcept from a CE/CWE/CNE: one coding per triplet, text from CWE.9 or a display."""
    if rep is None:
        return None
    codings: list[Json] = []
    stray: list[str] = []
    for code_at, display_at, system_at, version_at in _CWE_TRIPLETS:
        code, display, name = rep.text(code_at), rep.text(display_at), rep.text(system_at)
        system = default_system if code_at == 1 and not name else None
        if name:
            system = codes.coding_system(name)
            if system is None:
                ctx.warn(f"{where}.{system_at}: not a coding system name, kept as text")
                stray.append(name)
        if not code:
            continue
        coding: Json = {"code": code_token(code)}
        if system:
            coding["system"] = system
        if display:
            coding["display"] = display
        version = rep.text(version_at) if version_at else None
        if version and system:
            coding["version"] = version
        codings.append(coding)
    words = [w for w in (rep.text(9) or rep.text(2) or rep.text(5), *stray) if w]
    concept: Json = {}
    if codings:
        concept["coding"] = codings
    if words:
        concept["text"] = " ".join(words)
    return concept or None


def sub_codeable(rep: Rep | None, c: int, default_system: str) -> Json | None:
    """CodeableConcept from a CWE held in the sub-components of component c (e.g. RPT.1)."""
    if rep is None:
        return None
    code, display, name = rep.sub(c, 1), rep.sub(c, 2), rep.sub(c, 3)
    if not code:
        return {"text": display} if display else None
    coding: Json = {"system": (codes.coding_system(name) if name else None) or default_system,
                    "code": code_token(code)}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def table_code(rep: Rep | None, table: str) -> Json | None:
    """CodeableConcept for a value bound to an HL7 table (its system when none is given)."""
    if rep is None or not rep.text(1):
        return None
    if len((rep.text(1) or "").split()) > 1:  # free text where a code belongs
        return {"text": rep.text(1)}
    return {"coding": [_v2_coding(rep, table)]}


def _v2_coding(rep: Rep, table: str) -> Json:
    name = rep.text(3)
    system = (codes.coding_system(name) if name else None) or codes.V2 + table
    coding: Json = {"system": system, "code": code_token(rep.text(1) or "")}
    if rep.text(2):
        coding["display"] = rep.text(2)
    return coding


def identifier(rep: Rep | None, type_code: str | None = None, ctx: Context | None = None,
               where: str = "") -> Json | None:
    """Identifier from a CX: value CX.1, system from the assigning authority CX.4, type CX.5."""
    if rep is None or not rep.text(1):
        return None
    ident: Json = {"value": rep.text(1)}
    type_value = rep.text(5) or type_code
    if type_value:
        ident["type"] = {"coding": [{"system": codes.V2 + "0203", "code": code_token(type_value)}]}
    system = codes.assigner_system(rep.sub(4, 1), rep.sub(4, 2), rep.sub(4, 3))
    if system:
        ident["system"] = system
    elif ctx is not None:
        ctx.warn(f"{where}: identifier without assigning authority")
    if ctx is not None:
        valid = period(ctx, rep.text(7), rep.text(8), where)
        if valid:
            ident["period"] = valid
    return ident


def entity_identifier(rep: Rep | None, type_code: str | None = None) -> Json | None:
    """Identifier from an EI (EI.1 value; EI.2-4 namespace, universal id, type), e.g. a filler number."""
    if rep is None or not rep.text(1):
        return None
    if rep.subs(2) > 1:  # an HD sent inside EI.2 (seen in the wild)
        system = codes.assigner_system(rep.sub(2, 1), rep.sub(2, 2), rep.sub(2, 3))
    else:
        system = codes.assigner_system(rep.text(2), rep.text(3), rep.text(4))
    ident: Json = {"value": rep.text(1)}
    if system:
        ident["system"] = system
    if type_code:
        ident["type"] = {"coding": [{"system": codes.V2 + "0203", "code": type_code}]}
    return ident


def identifier_key(ident: Json) -> str:
    """The natural key of an identifier: system|value."""
    return f"{ident.get('system', '')}|{ident['value']}"


def quantity(value: float, units: Rep | None) -> Json:
    """Quantity with a UCUM code when the unit is UCUM or a known spelling of one."""
    result: Json = {"value": value}
    if units is None:
        return result
    code, text, name = units.text(1), units.text(2), units.text(3)
    unit = text or code
    if unit:
        result["unit"] = unit
    ucum = code if code and name and name.upper() == "UCUM" else None
    ucum = ucum or codes.UCUM_UNITS.get((code or "").lower()) or codes.UCUM_UNITS.get((text or "").lower())
    if ucum:
        result["system"] = codes.UCUM
        result["code"] = ucum
    return result


def location_display(rep: Rep | None) -> str | None:
    """A display for a PL: point of care, room, bed, facility, building, floor (+ description)."""
    if rep is None:
        return None
    parts = [rep.sub(1, 1), rep.text(2), rep.text(3), rep.sub(4, 1), rep.text(7), rep.text(8)]
    label = ", ".join(p for p in parts if p)
    description = rep.text(9)
    if description:
        label = f"{label} ({description})" if label else description
    return label or None


def practitioner(rep: Rep | None) -> Json | None:
    """A display-only Reference(Practitioner) from an XCN, with its identifier when sent."""
    if rep is None:
        return None
    names = [rep.text(6), rep.text(3), rep.text(4), rep.sub(2, 1), rep.text(5)]
    ref: Json = {"type": "Practitioner"}
    display = " ".join(n for n in names if n)
    if display:
        ref["display"] = display
    if rep.text(1):
        ident: Json = {"value": rep.text(1)}
        system = codes.assigner_system(rep.sub(9, 1), rep.sub(9, 2), rep.sub(9, 3))
        if system:
            ident["system"] = system
        ref["identifier"] = ident
    return ref if len(ref) > 1 else None


def period(ctx: Context, start: str | None, end: str | None, where: str) -> Json | None:
    """Period from two HL7 timestamps (an end of 9999… means open-ended)."""
    result: Json = {}
    first = ctx.when(start, where)
    last = ctx.when(end, where)
    if first:
        result["start"] = first
    if last and not last.startswith("9999"):
        result["end"] = last
    return result or None


def put(target: Json, key: str, value: object) -> None:
    """Set `key` only when `value` carries something (FHIR forbids empty elements)."""
    if value:
        target[key] = value


def put_all(target: Json, key: str, values: Sequence[Json | None]) -> None:
    """Set `key` to the non-empty values, if any."""
    kept = [v for v in values if v]
    if kept:
        target[key] = kept
