"""The HL7 v2 envelope: decode and normalise a message, read its MSH, judge acceptance, build ACKs.

Original acknowledgment mode (HL7 v2 chapter 2): AA accepted, AE could not be taken in (the
sender retries), AR rejected. Every AE/AR carries an ERR segment with an HL7 table 0357 code.
The ACK swaps sender and receiver, echoes MSH-10 in MSA-2 and uses the message's own delimiters
and version. Pure functions: no database, no sockets.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: HL7 table 0357 codes used here.
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_PROCESSING_ID = "202"
UNSUPPORTED_VERSION_ID = "203"
APPLICATION_INTERNAL_ERROR = "207"

#: MSH-18 values → Python codecs; anything else falls back to UTF-8, then Latin-1.
_CHARSETS = {"ASCII": "ascii", "8859/1": "latin-1", "8859/15": "iso8859-15", "UNICODE UTF-8": "utf-8",
             "UTF-8": "utf-8", "UNICODE": "utf-8", "8859/2": "iso8859-2", "CP1252": "cp1252"}
_VERSION = re.compile(r"^2\.\d+(\.\d+)?$")
_DEFAULT_DELIMITERS = ("|", "^~\\&")


class EnvelopeError(ValueError):
    """A message that fails acceptance: AR with this HL7 error code and text (never PHI)."""

    def __init__(self, code: str, text: str, location: str = "") -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.location = location


@dataclass(frozen=True)
class Header:
    """What acceptance and the ACK need from MSH (empty strings where absent)."""

    field_separator: str = "|"
    encoding: str = "^~\\&"
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    message_type: str = ""
    trigger: str = ""
    structure: str = ""
    control_id: str = ""
    processing_id: str = "P"
    version: str = "2.5.1"
    charset: str = ""

    @property
    def component(self) -> str:
        """The component separator."""
        return self.encoding[0]

    @property
    def sender(self) -> str:
        """Who sent it (MSH-3^MSH-4), for duplicate detection and allow lists."""
        return f"{self.sending_application}{self.component}{self.sending_facility}"

    @property
    def type_code(self) -> str:
        """`ADT^A01` style (always with ^, whatever the delimiters)."""
        return f"{self.message_type}^{self.trigger}" if self.trigger else self.message_type


@dataclass(frozen=True)
class Envelope:
    """A decoded, normalised message (segments separated by CR) and its header."""

    text: str
    header: Header
    charset: str
    warnings: tuple[str, ...] = field(default_factory=tuple)


def _msh_charset(raw: bytes) -> str | None:
    """MSH-18 read from the raw bytes (ASCII-safe: delimiters and the header are ASCII)."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 4:
        return None
    line = re.split(rb"[\r\n]", raw[start:], maxsplit=1)[0]
    fields = line.split(raw[start + 3 : start + 4])
    value = fields[17].split(b"~")[0].decode("ascii", "replace").strip() if len(fields) > 17 else ""
    return _CHARSETS.get(value.upper()) if value else None


def decode(raw: bytes) -> tuple[str, str]:
    """Text and codec: MSH-18's character set, else UTF-8, else Latin-1 (which never fails)."""
    declared = _msh_charset(raw)
    for codec in ([declared] if declared else []) + ["utf-8", "latin-1"]:
        try:
            return raw.decode(codec), codec
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")  # pragma: no cover


def normalise(text: str) -> str:
    """Strip a BOM and surrounding blank lines; CRLF and LF segment endings become CR."""
    text = text.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r")
    return "\r".join(segment for segment in text.split("\r") if segment.strip())


def _component(value: str, separator: str, index: int) -> str:
    parts = value.split(separator)
    return parts[index] if len(parts) > index else ""


def read_header(text: str) -> Header:
    """Parse MSH with the delimiters it declares; EnvelopeError when it is missing or malformed."""
    if not text.startswith("MSH") or len(text) < 8:
        raise EnvelopeError(SEGMENT_SEQUENCE_ERROR, "The message does not start with an MSH segment.", "MSH")
    separator = text[3]
    msh = text.split("\r", 1)[0]
    fields = msh.split(separator)
    encoding = fields[1] if len(fields) > 1 else ""
    if separator.isalnum() or separator.isspace() or not 4 <= len(encoding) <= 5 \
            or len(set(encoding + separator)) != len(encoding) + 1 \
            or any(c.isalnum() or c.isspace() for c in encoding):
        raise EnvelopeError(SEGMENT_SEQUENCE_ERROR, "MSH-1/MSH-2 do not declare valid delimiters.", "MSH^1^2")
    # fields[0] is "MSH" and fields[1] MSH-2, so MSH-n is fields[n - 1].
    def get(n: int) -> str:
        return fields[n - 1] if len(fields) > n - 1 else ""

    component = encoding[0]
    return Header(
        field_separator=separator, encoding=encoding[:4],
        sending_application=get(3), sending_facility=get(4), receiving_application=get(5),
        receiving_facility=get(6), message_type=_component(get(9), component, 0),
        trigger=_component(get(9), component, 1), structure=_component(get(9), component, 2),
        control_id=get(10).strip(), processing_id=_component(get(11), component, 0).strip(),
        version=_component(get(12), component, 0).strip(), charset=get(18).split(encoding[1])[0],
    )


def check_acceptance(header: Header) -> None:
    """EnvelopeError (AR) when MSH-10, MSH-11 or MSH-12 fail acceptance."""
    if not header.control_id:
        raise EnvelopeError(REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty.", "MSH^1^10")
    if header.processing_id not in ("P", "D", "T"):
        raise EnvelopeError(UNSUPPORTED_PROCESSING_ID, "MSH-11 (processing id) must be P, D or T.", "MSH^1^11")
    if not _VERSION.match(header.version):
        raise EnvelopeError(UNSUPPORTED_VERSION_ID, "MSH-12 is not a supported HL7 v2.x version.", "MSH^1^12")
    if not header.message_type:
        raise EnvelopeError(REQUIRED_FIELD_MISSING, "MSH-9 (message type) is empty.", "MSH^1^9")


def open_envelope(raw: bytes) -> Envelope:
    """Decode, normalise and read the header; EnvelopeError when the header fails acceptance."""
    text, codec = decode(raw)
    text = normalise(text)
    header = read_header(text)
    check_acceptance(header)
    return Envelope(text, header, codec)


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _escape(value: str, header: Header) -> str:
    """Escape delimiters in free text we put into the ACK (error texts)."""
    esc = header.encoding[2]
    out = value.replace(esc, f"{esc}E{esc}")
    for char, code in ((header.field_separator, "F"), (header.encoding[0], "S"), (header.encoding[1], "R"),
                       (header.encoding[3], "T")):
        out = out.replace(char, f"{esc}{code}{esc}")
    return out


def build_ack(header: Header | None, code: str, *, error: EnvelopeError | None = None,
              now: datetime | None = None, control_id: str | None = None) -> str:
    """The ACK (segments joined by CR) for a message; a default MSH when it had none."""
    h = header or Header()
    f, c = h.field_separator, h.component
    when = _timestamp(now or datetime.now(UTC))
    trigger = f"{c}{h.trigger}" if h.trigger else ""
    msh = f.join(["MSH", h.encoding, h.receiving_application or "TRIAGE", h.receiving_facility,
                  h.sending_application, h.sending_facility, when, "", f"ACK{trigger}{c}ACK",
                  control_id or uuid.uuid4().hex[:20], h.processing_id or "P", h.version or "2.5.1"])
    text = _escape(error.text, h) if error else ""
    segments = [msh, f.join(["MSA", code, h.control_id, text] if text else ["MSA", code, h.control_id])]
    if error is not None:
        location = error.location.replace("^", c)
        coded = c.join([error.code, _escape(error.text, h), "HL70357"])
        segments.append(f.join(["ERR", _legacy_err(h, error), location, coded, "E"]))
    return "\r".join(segments)


def _legacy_err(h: Header, error: EnvelopeError) -> str:
    """ERR-1 (ELD) for receivers before v2.5, which read only it: segment^sequence^field^code&text&table."""
    if not re.match(r"^2\.[0-4](\.|$)", h.version or ""):
        return ""
    sub = h.encoding[3]
    parts = (error.location.split("^") + ["", "", ""])[:3]
    return h.component.join([*parts, sub.join([error.code, _escape(error.text, h), "HL70357"])])


def ack_code(ack: str) -> str:
    """MSA-1 of an ACK we built."""
    for segment in ack.split("\r"):
        if segment.startswith("MSA"):
            return segment[4:6]
    return ""
