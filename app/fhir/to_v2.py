"""FHIR R4 back to HL7 v2.5 for outbound delivery: a Patient as ADT^A08, a DiagnosticReport and its
Observations as ORU^R01. Values are escaped; absent data leaves fields empty."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from app.fhir.errors import MappingError

__all__ = ["MappingError", "patient_adt", "pid", "report_oru"]

_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"), ("\n", "\\.br\\"))


def _esc(value: Any) -> str:
    text = "" if value is None else str(value)
    for char, escaped in _ESCAPES:
        text = text.replace(char, escaped)
    return text


def _ts(value: str | None) -> str:
    """A FHIR date/dateTime as an HL7 TS (precision kept, offset kept)."""
    if not value:
        return ""
    digits = value.replace("-", "").replace(":", "").replace("T", "")
    if len(value) > 10 and (value.endswith("Z") or "+" in value[10:] or "-" in value[10:]):
        when = datetime.fromisoformat(value)
        offset = when.strftime("%z") or "+0000"
        return when.strftime("%Y%m%d%H%M%S") + offset
    return digits


def _msh(kind: str, control_id: str) -> str:
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S+0000")
    return f"MSH|^~\\&|TRIAGE|TRIAGE|||{now}||{kind}|{control_id}|P|2.5"


def _cx(identifier: dict[str, Any]) -> str:
    system = str(identifier.get("system", ""))
    assigner = system.removeprefix("urn:oid:") if system.startswith("urn:oid:") else \
        unquote(system.removeprefix("urn:triage:assigner:")) if system.startswith("urn:triage:assigner:") else ""
    kind = ((identifier.get("type") or {}).get("coding") or [{}])[0].get("code", "")
    return f"{_esc(identifier.get('value'))}^^^{_esc(assigner)}^{_esc(kind)}"


def pid(patient: dict[str, Any]) -> str:
    """A PID segment from a Patient."""
    ids = "~".join(_cx(i) for i in patient.get("identifier", []) if i.get("value"))
    name = (patient.get("name") or [{}])[0]
    xpn = f"{_esc(name.get('family'))}^{_esc(' '.join(name.get('given', [])))}"
    gender = _GENDER.get(str(patient.get("gender", "")), "")
    return f"PID|1||{ids}||{xpn}||{_ts(patient.get('birthDate'))}|{gender}"


def patient_adt(patient: dict[str, Any]) -> str:
    """ADT^A08 (update patient information) for a Patient."""
    if not patient.get("identifier"):
        raise MappingError("the Patient has no identifier to send")
    control_id = uuid.uuid4().hex[:20]
    return "\r".join([_msh("ADT^A08^ADT_A01", control_id), f"EVN|A08|{_ts(datetime.now(UTC).isoformat())}",
                      pid(patient), "PV1|1|N"])


def _ce(concept: dict[str, Any] | None) -> str:
    coding = ((concept or {}).get("coding") or [{}])[0]
    text = coding.get("display") or (concept or {}).get("text")
    return f"{_esc(coding.get('code'))}^{_esc(text)}^{_esc(coding.get('system', ''))[:20]}"


def _obx(n: int, observation: dict[str, Any]) -> str:
    quantity = observation.get("valueQuantity")
    if quantity is not None:
        kind, value, unit = "NM", _esc(quantity.get("value")), _esc(quantity.get("unit") or quantity.get("code"))
    else:
        kind, value, unit = "ST", _esc(observation.get("valueString", "")), ""
    status = {"final": "F", "preliminary": "P", "corrected": "C", "cancelled": "X"}.get(observation.get("status", ""), "F")
    return f"OBX|{n}|{kind}|{_ce(observation.get('code'))}||{value}|{unit}|||||{status}"


def report_oru(patient: dict[str, Any], report: dict[str, Any], observations: list[dict[str, Any]]) -> str:
    """ORU^R01 for a DiagnosticReport, its Patient and its result Observations."""
    control_id = uuid.uuid4().hex[:20]
    when = _ts(report.get("effectiveDateTime") or report.get("issued"))
    segments = [_msh("ORU^R01^ORU_R01", control_id), pid(patient),
                f"OBR|1|||{_ce(report.get('code'))}|||{when}"]
    segments += [_obx(n, o) for n, o in enumerate(observations, start=1)]
    return "\r".join(segments)
