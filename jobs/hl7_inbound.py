"""HL7 inbound job kind: transform one stored message to FHIR R4 and store the resources.

Idempotent: a processed message is skipped; resources are upserted under deterministic ids.
A message that cannot be mapped fails permanently (status `failed` with the reason, in the dead
letters, `hl7.message.failed` event); after the mapping is fixed, requeueing reprocesses it.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import func
from sqlalchemy.orm import Session

from app import fhir
from app.models import Hl7Message, MessageStatus
from app.runtime import Runtime, current
from app.services import events, fhir_store, hl7_administrations, hl7_care, hl7_envelope
from app.services.hl7_intake import TRANSFORM_KIND
from jobs import auditing
from jobs.attempts import attempt_number
from jobs.errors import PermanentError
from jobs.spec import job_kind
from workers import hl7_metrics

log = logging.getLogger(__name__)
_WAITING = (MessageStatus.ACCEPTED.value, MessageStatus.FAILED.value)


def _fail(session: Session, message: Hl7Message, reason: str) -> None:
    message.status, message.error, message.processed_at = MessageStatus.FAILED.value, reason[:500], func.now()
    events.emit(session, organisation_id=message.organisation_id, type="hl7.message.failed", subject=str(message.id),
                payload={"message_id": message.id, "message_type": f"{message.message_type}^{message.trigger}"})


def _transform(session: Session, message: Hl7Message) -> str | None:
    """Map and store; the failure reason when the message cannot be mapped."""
    text = hl7_envelope.normalise(hl7_envelope.decode(bytes(message.raw))[0])
    try:
        result = fhir.transform(text)
    except (fhir.MappingError, fhir.UnsupportedMessageError) as exc:
        hl7_metrics.PARSE_ERRORS.labels(type(exc).__name__).inc()
        _fail(session, message, f"{type(exc).__name__}: {exc}")
        return str(exc)
    stored = fhir_store.save(session, message.organisation_id, result.resources, result.patient_id, message.id)
    warnings = list(result.warnings)
    if result.message_type == "RAS^O17":
        warnings += hl7_administrations.record(session, message, result.resources)
    if result.message_type == "VXU^V04" or result.message_type.startswith("SIU^"):
        warnings += hl7_care.record(session, message, result.resources, stored)
    message.status, message.resources = MessageStatus.PROCESSED.value, stored
    message.error = "; ".join(warnings)[:500] or None
    message.processed_at = func.now()
    events.emit(session, organisation_id=message.organisation_id, type="hl7.message.processed",
                subject=str(message.id), payload={"message_id": message.id, "message_type": result.message_type,
                                                   "resource_count": len(stored)})
    return None


def _give_up(runtime: Runtime, message_id: int, exc: Exception) -> None:
    with runtime.sessions.begin() as session:
        message = session.get(Hl7Message, message_id, with_for_update=True)
        if message is not None and message.status in _WAITING:
            _fail(session, message, f"transform failed: {type(exc).__name__}")


@job_kind(TRANSFORM_KIND, queue="hl7.inbound")
def transform_message(message_id: int) -> None:
    """Transform a stored message to FHIR (skipped once processed)."""
    runtime = current()
    started, last = time.perf_counter(), False
    try:
        with runtime.sessions.begin() as session:
            message = session.get(Hl7Message, message_id, with_for_update=True)
            if message is None or message.status not in _WAITING:
                return
            kind = f"{message.message_type}^{message.trigger}"
            _, last = attempt_number(session, message.job_id, 0)
            failure = _transform(session, message)
            patient = next((r.removeprefix("Patient/") for r in message.resources or () if r.startswith("Patient/")), None)
            auditing.record(session, "hl7_message.transform", organisation_id=message.organisation_id,
                            resource_type="Hl7Message", resource_id=message.id, patient_id=patient, job_id=message.job_id,
                            outcome="success" if failure is None else "error")
    except Exception as exc:  # a bug or an outage: retried; the last attempt leaves the message failed
        if last:
            _give_up(runtime, message_id, exc)
        raise
    hl7_metrics.PROCESSING.labels(kind).observe(time.perf_counter() - started)
    if failure is not None:
        raise PermanentError(f"HL7 message {message_id} cannot be mapped: {failure}")
