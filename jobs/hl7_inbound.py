"""HL7 inbound job kinds: transform stored messages (one, or a batch) to FHIR R4 and store the resources.

Idempotent: a processed message is skipped; resources are upserted under deterministic ids.
A message that cannot be mapped fails permanently (status `failed` with the reason, in the dead
letters, `hl7.message.failed` event); after the mapping is fixed, requeueing reprocesses it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, fields
from typing import cast
from zoneinfo import ZoneInfo

from rq.timeouts import BaseTimeoutException
from sqlalchemy import BigInteger, Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from app import fhir
from app.models import Hl7Message, Job, MessageStatus, Organisation
from app.runtime import Runtime, current
from app.services import events, fhir_store, hl7_administrations, hl7_care, hl7_envelope
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


# Core statements, built once: the transform reads and writes one row, which needs no ORM object.
_COLUMNS = [_MESSAGES.c[f.name] for f in fields(_Message) if f.name != "timezone"]
#: The message, locked, and the ledger counters of the job running it: the job in hand
#: (`running`) in a worker, else the message's own job.
_LOAD = {in_worker: select(*_COLUMNS, Organisation.timezone, Job.attempts, Job.max_attempts)
         .join(Organisation, Organisation.id == _MESSAGES.c.organisation_id)
         .outerjoin(Job, Job.id == (bindparam("running", type_=BigInteger) if in_worker else _MESSAGES.c.job_id))
         .where(_MESSAGES.c.id == bindparam("message")).with_for_update(of=_MESSAGES)
         for in_worker in (True, False)}
_PROCESSED = (update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message"))
              .values(status=MessageStatus.PROCESSED.value, resources=bindparam("stored", type_=JSONB),
                      error=bindparam("warnings"), processed_at=func.now()))
_FAILED = (update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message"))
           .values(status=MessageStatus.FAILED.value, error=bindparam("reason"), processed_at=func.now()))


def _load(session: Session, message_id: int) -> tuple[_Message | None, bool]:
    """The message (locked) and whether this is the last attempt of the ledger job running it: one statement."""
    running = running_job_id(None)
    params = {"message": message_id} if running is None else {"message": message_id, "running": running}
    row = session.execute(_LOAD[running is not None], params).one_or_none()
    if row is None:
        return None, False
    values = row._mapping
    message = _Message(**{f.name: values[f.name] for f in fields(_Message)})
    # The counters are None when the job is gone (outer join).
    return message, attempt_of(values["attempts"], values["max_attempts"], 0)[1]


def _fail(session: Session, message: _Message, reason: str) -> None:
    session.execute(_FAILED, {"message": message.id, "reason": reason[:500]})
    events.emit(session, organisation_id=message.organisation_id, type="hl7.message.failed", subject=str(message.id),
                payload={"message_id": message.id, "message_type": f"{message.message_type}^{message.trigger}"})


def _transform(session: Session, message: _Message) -> tuple[str | None, list[str]]:
    """Map and store: the failure reason when the message cannot be mapped, and its stored resources."""
    text = hl7_envelope.normalise(hl7_envelope.decode(bytes(message.raw))[0])
    try:
        result = fhir.transform(text, ZoneInfo(message.timezone))
    except (fhir.MappingError, fhir.UnsupportedMessageError) as exc:
        hl7_metrics.PARSE_ERRORS.labels(type(exc).__name__).inc()
        _fail(session, message, f"{type(exc).__name__}: {exc}")
        return str(exc), message.resources
    stored = fhir_store.save(session, message.organisation_id, result.resources, result.patient_id, message.id)
    warnings = list(result.warnings)
    if result.message_type == "RAS^O17":
        warnings += hl7_administrations.record(session, message, result.resources)
    if result.message_type == "VXU^V04" or result.message_type.startswith("SIU^"):
        warnings += hl7_care.record(session, message, result.resources, stored)
    session.execute(_PROCESSED, {"message": message.id, "stored": stored, "warnings": "; ".join(warnings)[:500] or None})
    events.emit(session, organisation_id=message.organisation_id, type="hl7.message.processed",
                subject=str(message.id), payload={"message_id": message.id, "message_type": result.message_type,
                                                   "resource_count": len(stored)})
    return None, stored


def _give_up(runtime: Runtime, message_id: int, exc: Exception) -> None:
    with runtime.sessions.begin() as session:
        message, _ = _load(session, message_id)
        if message is not None and message.status in _WAITING:
            _fail(session, message, f"transform failed: {type(exc).__name__}")


def _run(runtime: Runtime, message_id: int) -> str | None:
    """Transform one message in its own transaction; why it cannot be mapped, or None.

    Any other failure is raised (and retried); on the job's last attempt the message is left failed.
    """
    started, last = time.perf_counter(), False
    try:
        with runtime.sessions.begin() as session:
            message, last = _load(session, message_id)
            if message is None or message.status not in _WAITING:
                return None
            kind = f"{message.message_type}^{message.trigger}"
            failure, resources = _transform(session, message)
            patient = next((r.removeprefix("Patient/") for r in resources or () if r.startswith("Patient/")), None)
            auditing.record(session, "hl7_message.transform", organisation_id=message.organisation_id,
                            resource_type="Hl7Message", resource_id=message.id, patient_id=patient, job_id=message.job_id,
                            outcome="success" if failure is None else "error")
    except Exception as exc:  # a bug or an outage: retried; the last attempt leaves the message failed
        if last:
            _give_up(runtime, message_id, exc)
        raise
    hl7_metrics.PROCESSING.labels(kind).observe(time.perf_counter() - started)
    return failure


@job_kind(TRANSFORM_KIND, queue="hl7.inbound")
def transform_message(message_id: int) -> None:
    """Transform a stored message to FHIR (skipped once processed)."""
    failure = _run(current(), message_id)
    if failure is not None:
        raise PermanentError(f"HL7 message {message_id} cannot be mapped: {failure}")


@job_kind(TRANSFORM_BATCH_KIND, queue="hl7.inbound")
def transform_messages(message_ids: list[int]) -> None:
    """Transform messages taken in together, each in its own transaction (those processed are skipped).

    One message that fails does not hold back the others: all are tried, then the job fails with
    the first error (retried; a rerun skips what was processed) or, when some cannot be mapped,
    permanently (dead letters; requeued after a mapping fix, it transforms only those).
    """
    runtime = current()
    unmapped: list[str] = []
    error: Exception | None = None
    for message_id in message_ids:
        try:
            failure = _run(runtime, message_id)
        except BaseTimeoutException:  # the job's own deadline: stop here
            raise
        except Exception as exc:  # noqa: BLE001 - raised below, once the other messages had their turn
            error = error or exc
            continue
        if failure is not None:
            unmapped.append(f"{message_id}: {failure}")
    if error is not None:
        raise error
    if unmapped:
        raise PermanentError(f"HL7 messages cannot be mapped: {'; '.join(unmapped)}")
