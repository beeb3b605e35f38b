"""Outbound HL7: messages queued for named MLLP destinations, delivered in order, one at a time.

Each message is a ledger job on `hl7.outbound`. A message goes only when every earlier message
of its organisation to its destination has been sent or has died, and only one is in flight per
destination (a Redis lock), so a destination sees each organisation's messages in the order they
were queued. Destinations are platform-wide: any client with `hl7:write` may use them. AA/CA delivered; AE
retried; AR dead (permanent); timeouts and connection errors retried with backoff.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy import text as sql_text
from sqlalchemy.orm import Session

from app.config import Settings
from app.fhir import to_v2
from app.models import Job, JobStatus, OutboundMessage
from app.services import fhir_store, hl7_envelope, jobs
from app.services.mllp_client import Destination

SEND_KIND = "hl7.send"


class UnknownDestinationError(LookupError):
    """No destination of that name is configured."""


def destinations(settings: Settings) -> dict[str, Destination]:
    """The configured destinations by name."""
    return {name: Destination.parse(name, address) for name, address in settings.hl7_destinations}


def queue(session: Session, settings: Settings, *, organisation_id: int, destination: str,
          message: str) -> OutboundMessage:
    """Queue a message (its MSH checked as the receiving side would) for a destination."""
    if destination not in destinations(settings):
        raise UnknownDestinationError(f"no HL7 destination named {destination!r}")
    text = hl7_envelope.normalise(message)
    header = hl7_envelope.read_header(text)
    hl7_envelope.check_acceptance(header)
    # One writer per destination at a time, so ids (the delivery order) follow commit order.
    session.execute(sql_text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 2))"),
                    {"key": f"hl7-outbound:{organisation_id}:{destination}"})
    row = OutboundMessage(organisation_id=organisation_id, destination=destination, message=text,
                          message_type=header.type_code[:20], control_id=header.control_id[:200])
    session.add(row)
    session.flush()
    row.job_id = jobs.submit(session, SEND_KIND, row.id, organisation_id=organisation_id).id
    return row


def blocked(session: Session, row: OutboundMessage) -> bool:
    """Whether an earlier message of the organisation to the same destination is still waiting (one
    whose job died — crash, timeout — no longer waits: it is marked dead here)."""
    earlier = (select(OutboundMessage.id, Job.status).join(Job, Job.id == OutboundMessage.job_id, isouter=True)
               .where(OutboundMessage.organisation_id == row.organisation_id,
                      OutboundMessage.destination == row.destination, OutboundMessage.status == "pending",
                      OutboundMessage.id < row.id))
    waiting = False
    for earlier_id, job_status in session.execute(earlier).all():
        if job_status in (JobStatus.DEAD.value, JobStatus.CANCELLED.value):
            session.execute(update(OutboundMessage).where(OutboundMessage.id == earlier_id)
                            .values(status="dead", error="its delivery job ended without an answer"))
        else:
            waiting = True
    return waiting


def next_waiting(session: Session, row: OutboundMessage) -> OutboundMessage | None:
    """The next message of the organisation waiting for the same destination."""
    destination, after_id = row.destination, row.id
    return session.scalars(select(OutboundMessage).where(
        OutboundMessage.organisation_id == row.organisation_id, OutboundMessage.destination == destination,
        OutboundMessage.status == "pending",
        OutboundMessage.id > after_id).order_by(OutboundMessage.id).limit(1)).first()


def render(session: Session, organisation_id: int, reference: str) -> str:
    """A stored Patient (as ADT^A08) or DiagnosticReport (as ORU^R01) rendered as an HL7 v2 message."""
    kind, _, rid = reference.partition("/")
    if kind == "Patient":
        return to_v2.patient_adt(fhir_store.read(session, organisation_id, "Patient", rid))
    if kind != "DiagnosticReport":
        raise to_v2.MappingError("only Patient and DiagnosticReport resources can be sent as HL7 v2")
    report = fhir_store.read(session, organisation_id, "DiagnosticReport", rid)
    subject = str((report.get("subject") or {}).get("reference", "")).removeprefix("Patient/")
    patient = fhir_store.read(session, organisation_id, "Patient", subject)
    observations = [fhir_store.read(session, organisation_id, "Observation",
                                    str(r.get("reference", "")).removeprefix("Observation/"))
                    for r in report.get("result", [])]
    return to_v2.report_oru(patient, report, observations)
