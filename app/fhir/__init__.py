"""HL7 v2 → FHIR R4 mapping: `transform(er7)` gives the resources a message stands for."""

from app.fhir.mapping import MappingError, MappingResult, UnsupportedMessageError, transform

__all__ = ["MappingError", "MappingResult", "UnsupportedMessageError", "transform"]
