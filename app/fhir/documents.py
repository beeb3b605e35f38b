"""MDM^T02: TXA + OBX to a DocumentReference (text OBX as one text/plain attachment)."""

from __future__ import annotations

import base64
import binascii

from app.fhir import codes
from app.fhir.context import Context
from app.fhir.datatypes import Json, entity_identifier, identifier_key, practitioner, put, put_all, table_code
from app.fhir.er7 import Rep, Segment
from app.fhir.errors import MappingError
from app.fhir.orders import order_groups
from app.fhir.patient import map_subject
from app.fhir.service_requests import service_request

TEXT_PLAIN = "text/plain; charset=utf-8"
_TEXT_TYPES = frozenset({"", "ST", "TX", "FT"})
_MEDIA_TYPES = {"PDF": "application/pdf", "JPEG": "image/jpeg", "JPG": "image/jpeg", "PNG": "image/png",
                "TIFF": "image/tiff", "RTF": "application/rtf", "HTML": "text/html", "XML": "application/xml"}


def map_mdm(ctx: Context) -> None:
    """MDM^T02: a current DocumentReference (+ the ServiceRequest of its ORC/OBR, if any)."""
    txa = ctx.message.first("TXA")
    if txa is None:
        raise MappingError("MDM^T02 has no TXA segment")
    subject = map_subject(ctx, required=True)
    groups = order_groups(ctx)
    order = service_request(ctx, groups[0], subject, 1, with_observations=False) if groups else None
    number = entity_identifier(txa.rep(12))
    key = identifier_key(number) if number else f"message|{ctx.control_id}"
    document: Json = {"resourceType": "DocumentReference",
                      "id": ctx.new_id("DocumentReference", ctx.sender, key)}
    put(document, "masterIdentifier", number)
    orders = [entity_identifier(txa.rep(14), "PLAC"), entity_identifier(txa.rep(15), "FILL")]
    put_all(document, "identifier", orders)
    document["status"] = "current"
    put(document, "docStatus", codes.DOC_STATUS.get((txa.text(17) or "").upper()))
    put(document, "type", table_code(txa.rep(2), "0270"))
    put(document, "subject", subject.patient)
    put(document, "date", ctx.field_when(txa, 4, "instant") or ctx.field_when(txa, 6, "instant"))
    authors = [practitioner(r) for n in (5, 9) for r in txa.reps(n)]
    put_all(document, "author", [a for i, a in enumerate(authors) if a and a not in authors[:i]])
    put(document, "authenticator", practitioner(txa.rep(10)))
    document["content"] = _content(ctx, txa)
    context: Json = {}
    put(context, "encounter", [subject.encounter] if subject.encounter else None)
    put(context, "related", [order] if order else None)
    put(document, "context", context)
    ctx.add(document)


def _content(ctx: Context, txa: Segment) -> list[Json]:
    texts: list[str] = []
    content: list[Json] = []
    for obx in (s for s in ctx.message.segments if s.name == "OBX"):
        kind = (obx.text(2) or "").upper()
        if kind in _TEXT_TYPES:
            texts += [t for t in (r.literal() for r in obx.reps(5)) if t.strip()]
        elif kind == "ED":
            content += [a for a in (_encapsulated(ctx, r) for r in obx.reps(5)) if a]
    if texts:
        text: Json = {"contentType": TEXT_PLAIN, "data": base64.b64encode("\n".join(texts).encode()).decode()}
        put(text, "creation", ctx.field_when(txa, 6))
        content.insert(0, {"attachment": text})
    if not content:
        raise MappingError("MDM^T02 has no OBX document content")
    return content


def _encapsulated(ctx: Context, rep: Rep) -> Json | None:
    """Attachment from an ED: type ED.2/ED.3, encoding ED.4 (Base64, Hex or A), data ED.5."""
    media = _MEDIA_TYPES.get((rep.text(3) or "").upper(), "application/octet-stream")
    encoding, data = (rep.text(4) or "").upper(), rep.component(5)
    try:
        if encoding == "BASE64":
            raw = base64.b64decode(data, validate=True)
        elif encoding == "HEX":
            raw = bytes.fromhex(data)
        else:
            raw = ctx.message.unescape(data).encode()
    except (binascii.Error, ValueError):
        ctx.warn("OBX-5: ED data not decodable, omitted")
        return None
    if not raw:
        return None
    return {"attachment": {"contentType": media, "data": base64.b64encode(raw).decode()}}
