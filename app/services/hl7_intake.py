"""Taking in an HL7 v2 message (over MLLP or HTTP): store it raw, queue its transform, answer an ACK.

The ACK is decided here and stored with the message in the caller's transaction; the boundary
sends it only after the commit (an AA means the message and its job are durable). A message
that fails acceptance is stored as `rejected` (AR) for review. The same sender + MSH-10 again
within the duplicate window as a message taken in (AA) gets the original answer and is not
processed twice; after an AR it is judged afresh (a corrected message may keep its control id).
When the database cannot be reached the boundary answers AE (`unavailable_ack`): the sender retries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, insert, text
from sqlalchemy.orm import Session

from app.db import advisory_locks
from app.fhir.mapping import MAPPERS
from app.models import Hl7Message, MessageStatus
from app.services import hl7_envelope as envelope
from app.services import jobs

TRANSFORM_KIND = "hl7.transform"
#: The transform of several messages taken in together (the MLLP listener's group commit).
TRANSFORM_BATCH_KIND = "hl7.transform_batch"
#: Bytes of an oversize message kept for review (its header and start; the rest is not stored).
OVERSIZE_KEPT = 64 * 1024
#: Message types (MSH-9.1^MSH-9.2) that have a FHIR mapping.
SUPPORTED = frozenset(MAPPERS)
_SUPPORTED_TYPES = frozenset(t.split("^")[0] for t in SUPPORTED)


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
#: Ids for the messages about to be stored: the job that names them is written before them, so
#: they are inserted with it (no UPDATE of the indexed job_id afterwards).
_NEW_IDS = text("SELECT nextval(pg_get_serial_sequence('hl7_messages', 'id')) FROM generate_series(1, :n)")
#: Executed with a parameter set per message: one multi-row INSERT ("insertmanyvalues").
_INSERT_MESSAGES = insert(_MESSAGES)


def _allowed(header: envelope.Header, allowed: frozenset[str]) -> bool:
    return not allowed or header.sending_facility in allowed or f"{header.sending_application}^" \
        f"{header.sending_facility}" in allowed


@dataclass(frozen=True)
class _Verdict:
    """How one message is answered and stored, before duplicates are looked for."""

    raw: bytes
    size: int
    header: envelope.Header | None
    status: MessageStatus
    ack: str
    code: str
    charset: str = ""
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """Sender and control id as stored and compared."""
        assert self.header is not None
        return _clean(self.header.sender, 400), _clean(self.header.control_id, 200)


def _refused(raw: bytes, size: int, header: envelope.Header | None, error: envelope.EnvelopeError) -> _Verdict:
    return _Verdict(raw, size, header, MessageStatus.REJECTED, envelope.build_ack(header, "AR", error=error), "AR",
                    error=f"{error.code}: {error.text}")


def _judge(raw: bytes, size: int, policy: Policy) -> _Verdict:
    """The answer to one message on its own (no database): AR for what fails acceptance, else AA."""
    if size > policy.max_bytes:
        error = envelope.EnvelopeError(envelope.APPLICATION_INTERNAL_ERROR,
                                       f"The message exceeds the maximum size of {policy.max_bytes} bytes.")
        return _refused(raw[:OVERSIZE_KEPT], size, _header(raw), error)
    try:
        opened = envelope.open_envelope(raw)
    except envelope.EnvelopeError as refused:
        return _refused(raw, size, _header(raw), refused)
    header = opened.header
    if not _allowed(header, policy.allowed_senders):
        error = envelope.EnvelopeError(envelope.APPLICATION_INTERNAL_ERROR, "The sender is not allowed.", "MSH^1^4")
        return _refused(raw, size, header, error)
    if header.type_code in SUPPORTED:
        status = MessageStatus.ACCEPTED
    elif policy.reject_unsupported:
        code = envelope.UNSUPPORTED_MESSAGE_TYPE if header.message_type not in _SUPPORTED_TYPES \
            else envelope.UNSUPPORTED_EVENT_CODE
        error = envelope.EnvelopeError(code, f"Message type {header.type_code} is not accepted.", "MSH^1^9")
        return _refused(raw, size, header, error)
    else:
        status = MessageStatus.UNSUPPORTED
    return _Verdict(raw, size, header, status, envelope.build_ack(header, "AA"), "AA", opened.charset)


#: The latest copy of each (sender, control id) taken in (AA) within the duplicate window: what was answered.
#: A message answered AR or AE was not taken in: sent again (corrected, or once the database is
#: back), it is judged afresh.
#: One index probe per pair (LATERAL … LIMIT 1 in the duplicates index's order): a join lets the
#: planner sort every message of the organisation in the window (it did, with a new organisation's statistics).
_PREVIOUS = text(
    """
    SELECT k.sender, k.control_id, p.id, p.ack, p.ack_code, p.job_id
    FROM unnest(CAST(:senders AS text[]), CAST(:control_ids AS text[])) AS k(sender, control_id)
    CROSS JOIN LATERAL (
        SELECT m.id, m.ack, m.ack_code, m.job_id FROM hl7_messages m
        WHERE m.organisation_id = :organisation_id AND m.sender = k.sender AND m.control_id = k.control_id
            AND m.received_at > now() - CAST(:window AS interval) AND m.ack_code = 'AA'
        ORDER BY m.received_at DESC, m.id DESC LIMIT 1) AS p
    """
)


def _previous(session: Session, organisation_id: int, keys: set[tuple[str, str]],
              window: float) -> dict[tuple[str, str], Intake]:
    """The earlier answers to these (sender, control id) pairs within the window, locked against a concurrent copy."""
    if not keys:
        return {}
    ordered = sorted(keys)
    # Serialises intake per sender + control id, so a duplicate sent twice at once is stored once.
    advisory_locks(session, [f"hl7:{organisation_id}:{s}:{c}" for s, c in ordered], seed=0)
    rows = session.execute(_PREVIOUS, {"senders": [s for s, _ in ordered], "control_ids": [c for _, c in ordered],
                                       "organisation_id": organisation_id, "window": timedelta(seconds=window)})
    return {(r.sender, r.control_id): Intake(r.ack, r.ack_code, r.id, r.job_id, duplicate=True) for r in rows}


def _row(organisation_id: int, transport: str, verdict: _Verdict) -> dict[str, object]:
    h = verdict.header or envelope.Header(version="", processing_id="")
    return {"organisation_id": organisation_id, "transport": transport,
            "sender": _clean(h.sender, 400) if verdict.header else "", "message_type": _clean(h.message_type, 20),
            "trigger": _clean(h.trigger, 20), "version": _clean(h.version, 20),
            "control_id": _clean(h.control_id, 200), "charset": verdict.charset, "raw": verdict.raw,
            "size": verdict.size, "status": verdict.status.value, "ack": verdict.ack.replace("\x00", ""),
            "ack_code": verdict.code, "error": _clean(verdict.error, 500) if verdict.error else None}


def _queue(session: Session, organisation_id: int, message_ids: list[int]) -> int | None:
    """One transform job for the accepted messages (a batch job for several); its ledger id."""
    if not message_ids:
        return None
    if len(message_ids) == 1:
        return jobs.accept(session, TRANSFORM_KIND, message_ids[0], organisation_id=organisation_id).id
    return jobs.accept(session, TRANSFORM_BATCH_KIND, message_ids, organisation_id=organisation_id).id


def receive_many(session: Session, received: Sequence[tuple[bytes, int]], *, organisation_id: int, transport: str,
                 policy: Policy) -> list[Intake]:
    """Judge, store and queue several messages (raw, size received) in a few statements; the ACKs to send after commit.

    The same as `receive` for each message in turn: a repeat of a message taken in earlier, or
    before it in this batch, gets that message's answer and is not stored again. The accepted
    messages share one transform job.
    """
    verdicts = [_judge(raw, size, policy) for raw, size in received]
    earlier = _previous(session, organisation_id, {v.key for v in verdicts if v.code == "AA"},
                        policy.duplicate_window_seconds)
    stored: list[int] = []  # indexes of the verdicts to store
    repeats: dict[int, int] = {}  # index of a repeat within the batch → index of its first copy
    first: dict[tuple[str, str], int] = {}
    for i, verdict in enumerate(verdicts):
        if verdict.code == "AA" and (verdict.key in earlier or verdict.key in first):
            if verdict.key not in earlier:
                repeats[i] = first[verdict.key]
            continue
        if verdict.code == "AA":
            first[verdict.key] = i
        stored.append(i)
    ids: list[int] = sorted(session.execute(_NEW_IDS, {"n": len(stored)}).scalars()) if stored else []
    message_of = dict(zip(stored, ids))
    job_id = _queue(session, organisation_id,
                    [message_of[i] for i in stored if verdicts[i].status is MessageStatus.ACCEPTED])
    if stored:
        session.execute(_INSERT_MESSAGES, [
            {**_row(organisation_id, transport, verdicts[i]), "id": message_of[i],
             "job_id": job_id if verdicts[i].status is MessageStatus.ACCEPTED else None} for i in stored])
    answers: list[Intake] = []
    for i, verdict in enumerate(verdicts):
        message_type = verdict.header.type_code if verdict.header else ""
        if i in message_of:
            queued = job_id if verdict.status is MessageStatus.ACCEPTED else None
            answers.append(Intake(verdict.ack, verdict.code, message_of[i], queued, message_type=message_type))
        else:
            original = earlier.get(verdict.key) or answers[repeats[i]]
            answers.append(replace(original, duplicate=True, message_type=message_type))
    return answers


def receive(session: Session, raw: bytes, *, organisation_id: int, transport: str, policy: Policy,
            size: int | None = None) -> Intake:
    """Judge, store and (when accepted) queue one message; the ACK to send after commit.

    `size` is the full size when `raw` was cut at the size limit (then the answer is AR).
    """
    return receive_many(session, [(raw, len(raw) if size is None else size)], organisation_id=organisation_id,
                        transport=transport, policy=policy)[0]


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
