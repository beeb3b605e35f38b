"""The state of one transform: the parsed message, the resources made so far, ids and warnings."""

from __future__ import annotations

import uuid
from datetime import tzinfo
from typing import Any

from app.fhir import timestamps
from app.fhir.er7 import Message, Segment

Resource = dict[str, Any]
#: uuid5 namespace of every provisional id (fixed: ids must not change between releases).
ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:triage:fhir:provisional-id")


class Context:
    """What a mapper reads from and writes to; `warn` texts name fields, never their values."""

    def __init__(self, message: Message, message_type: str, zone: tzinfo | None = None) -> None:
        self.message = message
        self.zone = zone  # the sender's: where timestamps without an offset were taken
        self.message_type = message_type
        msh = message.segments[0]
        self.event = message_type.partition("^")[2]
        self.sender = msh.text(4) or msh.text(3) or ""
        self.control_id = msh.text(10) or ""
        self.resources: list[Resource] = []
        self.patient_id: str | None = None
        self._warnings: dict[str, None] = {}
        self._ids: set[str] = set()

    @property
    def warnings(self) -> list[str]:
        """Warnings in the order first met, each once."""
        for problem in sorted(self.message.problems):
            self._warnings.setdefault(problem, None)
        return list(self._warnings)

    def warn(self, text: str) -> None:
        """Record a lenient data problem (say where, never what)."""
        self._warnings.setdefault(text, None)

    def new_id(self, resource_type: str, *key: str) -> str:
        """A deterministic id from natural keys; a key met twice in one message gets a suffix."""
        base = "|".join((resource_type, *key))
        name, n = base, 1
        while True:
            candidate = uuid.uuid5(ID_NAMESPACE, name).hex
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate
            n += 1
            name = f"{base}#{n}"

    def add(self, resource: Resource) -> Resource:
        """Append a resource to the result and return a reference to it."""
        self.resources.append(resource)
        return {"reference": f"{resource['resourceType']}/{resource['id']}"}

    def when(self, raw: str | None, where: str, kind: timestamps.Kind = "dateTime") -> str | None:
        """A FHIR date/dateTime/instant from an HL7 timestamp, warning (by field) when lenient."""
        if not raw:
            return None
        converted = timestamps.convert(raw, kind, self.zone)
        if converted.problem:
            self.warn(f"{where}: {converted.problem}")
        return converted.value

    def field_when(self, segment: Segment, n: int, kind: timestamps.Kind = "dateTime") -> str | None:
        """`when` for the first component of field n of a segment."""
        return self.when(segment.text(n), f"{segment.name}-{n}", kind)
