"""Taking in an HL7 v2 message (over MLLP or HTTP): store it raw, queue its transform, answer an ACK.

The ACK is decided here and stored with the message in the caller's transaction; the boundary
sends it only after the commit (an AA means the message and its job are durable). A message
that fails acceptance is stored as `rejected` (AR) for review. The same sender + MSH-10 again
within the duplicate window gets the original answer and is not processed twice. When the
database cannot be reached the boundary answers AE (`unavailable_ack`): the sender retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from sqlalchemy import Interval, Row, Table, bindparam, func, insert, select, text, update
from sqlalchemy.orm import Session

from app.fhir.mapping import MAPPERS
from app.models import Hl7Message, MessageStatus
from app.services import hl7_envelope as envelope
from app.services import jobs

TRANSFORM_KIND = "hl7.transform"
#: Bytes of an oversize message kept for review (its header and start; the rest is not stored).
OVERSIZE_KEPT = 64 * 1024
#: Message types (MSH-9.1^MSH-9.2) that have a FHIR mapping.
SUPPORTED = frozenset(MAPPERS)


@dataclass(frozen=True)
class Policy:
    """How a listener judges messages (from settings)."""

    max_bytes: int
    duplicate_window_seconds: float
    reject_unsupported: bool = False
    allowed_senders: frozenset[str] = frozenset()  # MSH-4, or MSH-3^MSH-4; empty: anyone


@dataclass(frozen=True)
class Intake:
    """What was answered: the ACK, its code, and the stored message and job (if any)."""

    ack: str
    code: str
    message_id: int | None
    job_id: int | None
    duplicate: bool = False
    message_type: str = ""


def _header(raw: bytes) -> envelope.Header | None:
    try:
        return envelope.read_header(envelope.normalise(envelope.decode(raw[:4096])[0]))
    except envelope.EnvelopeError:
        return None


def _clean(value: str, limit: int) -> str:
    """A header value as stored and compared: no NUL (PostgreSQL refuses it), cut to the column."""
    return value.replace("\x00", "")[:limit]


_MESSAGES = cast(Table, Hl7Message.__table__)
#: Core statements, built once: the intake path writes a row per message and needs no ORM object.
_INSERT_MESSAGE = insert(_MESSAGES).returning(_MESSAGES.c.id)
_SET_JOB = update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message")).values(job_id=bindparam("job"))


def _store(session: Session, organisation_id: int, transport: str, raw: bytes, size: int,
           header: envelope.Header | None, charset: str, status: MessageStatus, ack: str,
           error: str | None) -> int:
    """Store the message as received, with what is answered; its id."""
    h = header or envelope.Header(version="", processing_id="")
    row = {"organisation_id": organisation_id, "transport": transport,
           "sender": _clean(h.sender, 400) if header else "", "message_type": _clean(h.message_type, 20),
           "trigger": _clean(h.trigger, 20), "version": _clean(h.version, 20),
           "control_id": _clean(h.control_id, 200), "charset": charset, "raw": raw, "size": size,
           "status": status.value, "ack": ack.replace("\x00", ""), "ack_code": envelope.ack_code(ack),
           "error": _clean(error, 500) if error else None}
    message_id: int = session.execute(_INSERT_MESSAGE, row).scalar_one()
    return message_id


def _reject(session: Session, organisation_id: int, transport: str, raw: bytes, size: int,
            header: envelope.Header | None, error: envelope.EnvelopeError) -> Intake:
    ack = envelope.build_ack(header, "AR", error=error)
    message_id = _store(session, organisation_id, transport, raw, size, header, "", MessageStatus.REJECTED, ack,
                        f"{error.code}: {error.text}")
    return Intake(ack, "AR", message_id, None, message_type=header.type_code if header else "")


def _allowed(header: envelope.Header, allowed: frozenset[str]) -> bool:
    return not allowed or header.sending_facility in allowed or f"{header.sending_application}^" \
        f"{header.sending_facility}" in allowed


#: Serialises intake per sender + control id, so a duplicate sent twice at once is stored once.
_LOCK_CONTROL_ID = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
#: The latest copy of a message within the duplicate window: what was answered (built once).
_PREVIOUS = (select(Hl7Message.id, Hl7Message.ack, Hl7Message.ack_code, Hl7Message.job_id)
             .where(Hl7Message.organisation_id == bindparam("organisation_id"), Hl7Message.sender == bindparam("sender"),
                    Hl7Message.control_id == bindparam("control_id"),
                    Hl7Message.received_at > func.now() - bindparam("window", type_=Interval))
             .order_by(Hl7Message.id.desc()).limit(1))


def _previous(session: Session, organisation_id: int, header: envelope.Header,
              window: float) -> Row[int, str, str, int | None] | None:
    """The earlier copy of this message within the window (serialised per sender + control id)."""
    sender, control_id = _clean(header.sender, 400), _clean(header.control_id, 200)
    session.execute(_LOCK_CONTROL_ID, {"key": f"hl7:{organisation_id}:{sender}:{control_id}"})
    return session.execute(_PREVIOUS, {"organisation_id": organisation_id, "sender": sender, "control_id": control_id,
                                       "window": timedelta(seconds=window)}).first()


def receive(session: Session, raw: bytes, *, organisation_id: int, transport: str, policy: Policy,
            size: int | None = None) -> Intake:
    """Judge, store and (when accepted) queue one message; the ACK to send after commit.

    `size` is the full size when `raw` was cut at the size limit (then the answer is AR).
    """
    size = len(raw) if size is None else size
    if size > policy.max_bytes:
        error = envelope.EnvelopeError(envelope.APPLICATION_INTERNAL_ERROR,
                                       f"The message exceeds the maximum size of {policy.max_bytes} bytes.")
        return _reject(session, organisation_id, transport, raw[:OVERSIZE_KEPT], size, _header(raw), error)
    try:
        opened = envelope.open_envelope(raw)
    except envelope.EnvelopeError as refused:
        return _reject(session, organisation_id, transport, raw, size, _header(raw), refused)
    header = opened.header
    if not _allowed(header, policy.allowed_senders):
        error = envelope.EnvelopeError(envelope.APPLICATION_INTERNAL_ERROR, "The sender is not allowed.", "MSH^1^4")
        return _reject(session, organisation_id, transport, raw, size, header, error)
    earlier = _previous(session, organisation_id, header, policy.duplicate_window_seconds)
    if earlier is not None:
        return Intake(earlier.ack, earlier.ack_code, earlier.id, earlier.job_id, duplicate=True,
                      message_type=header.type_code)
    if header.type_code not in SUPPORTED:
        if policy.reject_unsupported:
            code = envelope.UNSUPPORTED_MESSAGE_TYPE if header.message_type not in {t.split("^")[0] for t in SUPPORTED} \
                else envelope.UNSUPPORTED_EVENT_CODE
            error = envelope.EnvelopeError(code, f"Message type {header.type_code} is not accepted.", "MSH^1^9")
            return _reject(session, organisation_id, transport, raw, size, header, error)
        ack = envelope.build_ack(header, "AA")
        message_id = _store(session, organisation_id, transport, raw, size, header, opened.charset,
                            MessageStatus.UNSUPPORTED, ack, None)
        return Intake(ack, "AA", message_id, None, message_type=header.type_code)
    ack = envelope.build_ack(header, "AA")
    message_id = _store(session, organisation_id, transport, raw, size, header, opened.charset,
                        MessageStatus.ACCEPTED, ack, None)
    job = jobs.submit(session, TRANSFORM_KIND, message_id, organisation_id=organisation_id)
    session.execute(_SET_JOB, {"message": message_id, "job": job.id})
    return Intake(ack, "AA", message_id, job.id, message_type=header.type_code)


def failed_ack(raw: bytes) -> str:
    """AR for a message that could not be stored for a reason a resend would meet again."""
    error = envelope.EnvelopeError(envelope.APPLICATION_INTERNAL_ERROR,
                                   "The message could not be stored; it was not accepted.")
    return envelope.build_ack(_header(raw), "AR", error=error)


def unavailable_ack(raw: bytes) -> str:
    """AE for a message that could not be stored (the database is down): the sender must retry."""
    error = envelope.EnvelopeError(envelope.APPLICATION_INTERNAL_ERROR,
                                   "The message could not be stored; send it again later.")
    return envelope.build_ack(_header(raw), "AE", error=error)
