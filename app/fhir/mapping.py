"""The entry point: one HL7 v2 message (ER7) in, FHIR R4 resources with provisional ids out.

Pure: no database, no network, no validation (tests validate every resource with the R4B models).
Ids are uuid5 of natural keys, so mapping a message twice gives the same ids; references between
the resources use "ResourceType/<provisional id>" for a storage layer to rewrite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from app.fhir.adt import map_adt, map_merge
from app.fhir.context import Context
from app.fhir.documents import map_mdm
from app.fhir.er7 import parse
from app.fhir.errors import MappingError, UnsupportedMessageError
from app.fhir.immunization import map_vxu
from app.fhir.medication import map_ras, map_rde
from app.fhir.results import map_oru
from app.fhir.scheduling import map_siu
from app.fhir.service_requests import map_orm

__all__ = ["MAPPERS", "MappingError", "MappingResult", "UnsupportedMessageError", "transform"]

#: Message type^event → the function that maps it.
MAPPERS: dict[str, Callable[[Context], None]] = {
    "ADT^A01": map_adt, "ADT^A03": map_adt, "ADT^A04": map_adt, "ADT^A08": map_adt, "ADT^A40": map_merge,
    "ORU^R01": map_oru, "VXU^V04": map_vxu, "RDE^O11": map_rde, "RAS^O17": map_ras,
    "SIU^S12": map_siu, "SIU^S13": map_siu, "SIU^S14": map_siu, "SIU^S15": map_siu, "SIU^S26": map_siu,
    "ORM^O01": map_orm, "MDM^T02": map_mdm,
}


@dataclass(frozen=True)
class MappingResult:
    """The resources one message maps to, its Patient's provisional id, and lenient-data warnings."""

    message_type: str
    resources: list[dict[str, Any]]
    patient_id: str | None
    warnings: list[str]


def transform(er7: str, zone: tzinfo | None = None) -> MappingResult:
    """Map one HL7 v2 message (segments separated by '\\r'; BOM already stripped) to FHIR R4 resources.

    `zone`: the sender's time zone, for timestamps without an offset (UTC, with a warning, if None).
    """
    message = parse(er7)
    msh = message.segments[0]
    evn = message.first("EVN")
    event = msh.text(9, 2) or (evn.text(1) if evn else None)  # before v2.3 the event was only in EVN-1
    kind, event = (msh.text(9, 1) or "").upper(), (event or "").upper()
    if not kind:
        raise MappingError("MSH-9 (message type) is empty")
    message_type = f"{kind}^{event}"
    mapper = MAPPERS.get(message_type)
    if mapper is None:
        raise UnsupportedMessageError(f"message type {message_type[:16]!r} is not mapped")
    ctx = Context(message, message_type, zone)
    mapper(ctx)
    return MappingResult(message_type, ctx.resources, ctx.patient_id, ctx.warnings)
