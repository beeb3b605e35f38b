"""HL7 inbound job kinds: transform stored messages (one, or a batch) to FHIR R4 and store the resources.

Idempotent: a processed message is skipped; resources are upserted under deterministic ids.
A message that cannot be mapped fails permanently (status `failed` with the reason, in the dead
letters, `hl7.message.failed` event); after the mapping is fixed, requeueing reprocesses it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from typing import cast
from zoneinfo import ZoneInfo

from rq.timeouts import BaseTimeoutException
from sqlalchemy import BigInteger, Table, any_, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app import fhir
from app.models import Hl7Message, Job, MessageStatus, Organisation
from app.runtime import Runtime, current
from app.services import audit, events, fhir_store, hl7_administrations, hl7_care, hl7_envelope
from app.services.hl7_intake import TRANSFORM_BATCH_KIND, TRANSFORM_KIND
from jobs import auditing
from jobs.attempts import attempt_of, running_job_id
from jobs.errors import PermanentError
from jobs.spec import job_kind
from workers import hl7_metrics

log = logging.getLogger(__name__)
_WAITING = (MessageStatus.ACCEPTED.value, MessageStatus.FAILED.value)
_MESSAGES = cast(Table, Hl7Message.__table__)


@dataclass(frozen=True)
class _Message:
    """The columns of a stored message that its transform reads (the row stays locked)."""

    id: int
    organisation_id: int
    sender: str
    message_type: str
    trigger: str
    raw: bytes | memoryview  # psycopg2 reads bytea as a memoryview
    status: str
    resources: list[str]
    job_id: int | None
    timezone: str  # the organisation's IANA zone: where timestamps without an offset were taken


# Core statements, built once: the transform reads and writes rows, which needs no ORM object.
_COLUMNS = [_MESSAGES.c[f.name] for f in fields(_Message) if f.name != "timezone"]
#: The messages, locked in id order, and the ledger counters of the job running them: the job in
#: hand (`running`) in a worker, else each message's own job. The zone is a subquery, not a join:
#: joined, the planner may reach the messages through the organisation's index and filter all of
#: its messages (it did, with the statistics of a new organisation); alone, only the primary key serves.
_ZONE = select(Organisation.timezone).where(Organisation.id == _MESSAGES.c.organisation_id).scalar_subquery()
_LOAD = {in_worker: select(*_COLUMNS, _ZONE.label("timezone"), Job.attempts, Job.max_attempts)
         .outerjoin(Job, Job.id == (bindparam("running", type_=BigInteger) if in_worker else _MESSAGES.c.job_id))
         .where(_MESSAGES.c.id == any_(bindparam("messages", type_=ARRAY(BigInteger))))
         .order_by(_MESSAGES.c.id).with_for_update(of=_MESSAGES)
         for in_worker in (True, False)}
#: Messages processed: one statement for all, the values as a JSON array of {id, resources, warnings}.
#: `m.id = ANY(:ids)` lets the primary key find the rows whatever the planner guesses of the array.
_PROCESSED = text(
    """
    UPDATE hl7_messages m SET status = 'processed', resources = v.resources, error = v.warnings, processed_at = now()
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(id bigint, resources jsonb, warnings text)
    WHERE m.id = v.id AND m.id = ANY(CAST(:ids AS bigint[]))
    """
)
_FAILED = (update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message"))
           .values(status=MessageStatus.FAILED.value, error=bindparam("reason"), processed_at=func.now()))


def _load(session: Session, message_ids: list[int]) -> tuple[list[_Message], bool]:
    """The messages (locked) and whether this is the last attempt of the ledger job running them: one statement."""
    running = running_job_id(None)
    params: dict[str, object] = {"messages": message_ids}
    if running is not None:
        params["running"] = running
    rows = [row._mapping for row in session.execute(_LOAD[running is not None], params)]
    messages = [_Message(**{f.name: values[f.name] for f in fields(_Message)}) for values in rows]
    # The counters are None when the job is gone (outer join).
    last = bool(rows) and attempt_of(rows[0]["attempts"], rows[0]["max_attempts"], 0)[1]
    return messages, last


def _failed(session: Session, message: _Message, reason: str) -> events.Emission:
    """Mark the message failed; the event that says so."""
    session.execute(_FAILED, {"message": message.id, "reason": reason[:500]})
    return events.Emission(message.organisation_id, "hl7.message.failed", str(message.id),
                           {"message_id": message.id, "message_type": f"{message.message_type}^{message.trigger}"})


def _map(message: _Message) -> fhir.MappingResult | Exception:
    """The message's FHIR resources, or why it cannot be mapped (no database)."""
    text = hl7_envelope.normalise(hl7_envelope.decode(bytes(message.raw))[0])
    try:
        return fhir.transform(text, ZoneInfo(message.timezone))
    except (fhir.MappingError, fhir.UnsupportedMessageError) as exc:
        hl7_metrics.PARSE_ERRORS.labels(type(exc).__name__).inc()
        return exc


def _store(session: Session, message: _Message, result: fhir.MappingResult) -> tuple[dict[str, object], events.Emission]:
    """Store a mapped message's resources (the caller holds their locks) and what they mean clinically;
    its processed row and event."""
    stored = fhir_store.save(session, message.organisation_id, result.resources, result.patient_id, message.id,
                             locked=True)
    warnings = list(result.warnings)
    if result.message_type == "RAS^O17":
        warnings += hl7_administrations.record(session, message, result.resources)
    if result.message_type == "VXU^V04" or result.message_type.startswith("SIU^"):
        warnings += hl7_care.record(session, message, result.resources, stored)
    row = {"id": message.id, "resources": stored, "warnings": "; ".join(warnings)[:500] or None}
    return row, events.Emission(message.organisation_id, "hl7.message.processed", str(message.id),
                                {"message_id": message.id, "message_type": result.message_type,
                                 "resource_count": len(stored)})


def _audit(message: _Message, resources: list[str], failed: bool) -> audit.AuditEntry:
    patient = next((r.removeprefix("Patient/") for r in resources if r.startswith("Patient/")), None)
    return auditing.entry("hl7_message.transform", organisation_id=message.organisation_id,
                          resource_type="Hl7Message", resource_id=message.id, patient_id=patient,
                          job_id=message.job_id, outcome="error" if failed else "success")


def _transform(session: Session, messages: list[_Message]) -> dict[int, str]:
    """Map and store the messages in the caller's transaction; why each one that cannot be mapped cannot.

    The locks of every message's save (its person, its resources) are taken first, all together
    in one sorted order: two transactions that write the same person or resource queue instead of
    deadlocking on those rows, and those that share none run side by side. (Rows the keys do not
    cover can still deadlock, rarely: PostgreSQL detects it and the batch is redone one by one.)
    """
    mapped = [(message, _map(message)) for message in messages]
    fhir_store.lock(session, list({key for m, r in mapped if not isinstance(r, Exception)
                                   for key in fhir_store.lock_keys(m.organisation_id, r.resources, r.patient_id)}))
    processed: list[dict[str, object]] = []
    emitted: list[events.Emission] = []
    entries: list[audit.AuditEntry] = []
    unmapped: dict[int, str] = {}
    for message, result in mapped:
        if isinstance(result, Exception):
            unmapped[message.id] = str(result)
            emitted.append(_failed(session, message, f"{type(result).__name__}: {result}"))
            entries.append(_audit(message, message.resources, failed=True))
            continue
        row, event = _store(session, message, result)
        processed.append(row)
        emitted.append(event)
        entries.append(_audit(message, cast(list[str], row["resources"]), failed=False))
    if processed:
        session.execute(_PROCESSED, {"rows": json.dumps(processed), "ids": [row["id"] for row in processed]})
    events.emit_many(session, emitted)
    audit.record_many(session, entries)
    return unmapped


def _give_up(runtime: Runtime, message_ids: list[int], exc: BaseException, *, if_last: bool = False) -> None:
    """Leave the messages still waiting failed (the job's last attempt failed; `if_last`: check that it is)."""
    with runtime.sessions.begin() as session:
        messages, last = _load(session, message_ids)
        if if_last and not last:
            return
        waiting = [m for m in messages if m.status in _WAITING]
        events.emit_many(session, [_failed(session, m, f"transform failed: {type(exc).__name__}") for m in waiting])


def _run(runtime: Runtime, message_ids: list[int], *, give_up: bool = True) -> dict[int, str]:
    """Transform the messages waiting among these in one transaction; why each that cannot be mapped cannot.

    Any other failure is raised (and retried); on the job's last attempt the messages are left
    failed, unless `give_up` is False (the caller tries them again one by one).
    """
    started, last = time.perf_counter(), False
    try:
        with runtime.sessions.begin() as session:
            messages, last = _load(session, message_ids)
            waiting = [m for m in messages if m.status in _WAITING]
            unmapped = _transform(session, waiting) if waiting else {}
    except Exception as exc:  # a bug or an outage: retried; the last attempt leaves the messages failed
        if last and give_up:
            _give_up(runtime, message_ids, exc)
        raise
    elapsed = (time.perf_counter() - started) / max(len(waiting), 1)
    for message in waiting:
        hl7_metrics.PROCESSING.labels(f"{message.message_type}^{message.trigger}").observe(elapsed)
    return unmapped


@job_kind(TRANSFORM_KIND, queue="hl7.inbound")
def transform_message(message_id: int) -> None:
    """Transform a stored message to FHIR (skipped once processed)."""
    unmapped = _run(current(), [message_id])
    if unmapped:
        raise PermanentError(f"HL7 message {message_id} cannot be mapped: {unmapped[message_id]}")


@job_kind(TRANSFORM_BATCH_KIND, queue="hl7.inbound")
def transform_messages(message_ids: list[int]) -> None:
    """Transform messages taken in together, in one transaction (those processed are skipped).

    When that transaction fails, each message is tried again in a transaction of its own, so one
    message that cannot be stored does not hold back the others; the job then fails with the
    first error (retried: a rerun skips what was processed). Messages that cannot be mapped are
    failed and the job goes to the dead letters; requeued after a mapping fix, it redoes only them.
    """
    runtime = current()
    try:
        try:
            unmapped = _run(runtime, message_ids, give_up=False)
        except BaseTimeoutException:
            raise
        except Exception as exc:  # noqa: BLE001 - logged; each message alone, below, raises what remains
            log.warning("HL7 batch of %s messages: %s in its transaction; taking them one by one",
                        len(message_ids), type(exc).__name__)
            unmapped = _one_by_one(runtime, message_ids)
    except BaseTimeoutException as exc:  # the job's deadline: on its last attempt, what is left fails
        _give_up(runtime, message_ids, exc, if_last=True)
        raise
    if unmapped:
        reasons = "; ".join(f"{message_id}: {reason}" for message_id, reason in unmapped.items())
        raise PermanentError(f"HL7 messages cannot be mapped: {reasons}")


def _one_by_one(runtime: Runtime, message_ids: list[int]) -> dict[int, str]:
    """Each message in its own transaction; the first error is raised once all had their turn."""
    unmapped: dict[int, str] = {}
    error: Exception | None = None
    for message_id in message_ids:
        try:
            unmapped |= _run(runtime, [message_id])
        except BaseTimeoutException:
            raise
        except Exception as exc:  # noqa: BLE001 - logged; the first is raised once the others had their turn
            log.warning("HL7 message %s: %s in its transform", message_id, type(exc).__name__)
            error = error or exc
    if error is not None:
        raise error
    return unmapped
