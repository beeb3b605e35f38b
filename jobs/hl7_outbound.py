"""HL7 outbound job kind: deliver one queued message to its MLLP destination, in order."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func

from app.models import Job, OutboundMessage
from app.outbox import Outgoing, stage
from app.runtime import Runtime, current
from app.services import hl7_outbound, mllp_client
from jobs import auditing
from jobs.attempts import attempt_number
from jobs.errors import PermanentError, Postpone, TransientError
from jobs.spec import job_kind
from workers import hl7_metrics

log = logging.getLogger(__name__)
#: Seconds a message waits behind an earlier one (or the destination's lock) before looking again.
WAIT = 1.0


@dataclass(frozen=True)
class Delivery:
    """The message to send now."""

    id: int
    destination: mllp_client.Destination
    message: bytes
    control_id: str
    last: bool


def _ready(runtime: Runtime, outbound_id: int) -> Delivery | str | None:
    """The delivery when it is this message's turn; None when already done; a reason it never can be;
    Postpone when not yet."""
    with runtime.sessions.begin() as session:
        row = session.get(OutboundMessage, outbound_id, with_for_update=True)
        if row is None:
            return None
        attempt, last = attempt_number(session, row.job_id, row.attempts)
        if row.status == "dead" and attempt == 1 and row.attempts > 0:  # requeued from the dead letters
            row.status, row.error = "pending", None
        if row.status != "pending":
            return None
        if hl7_outbound.blocked(session, row):
            raise Postpone(WAIT, f"waiting behind earlier messages to {row.destination}")
        destination = hl7_outbound.destinations(runtime.settings).get(row.destination)
        if destination is None:
            reason = f"destination {row.destination!r} is no longer configured"
            row.status, row.error = "dead", reason
            return reason
        return Delivery(row.id, destination, row.message.encode("utf-8"), row.control_id, last)


def _record(runtime: Runtime, delivery: Delivery, status: str, ack: mllp_client.Acknowledgement | None,
            error: str | None) -> None:
    with runtime.sessions.begin() as session:
        row = session.get_one(OutboundMessage, delivery.id, with_for_update=True)
        row.attempts += 1
        row.status, row.error = status, error
        if ack is not None:
            row.ack, row.ack_code = ack.text, ack.code
        if status == "sent":
            row.sent_at = func.now()
            auditing.record(session, "hl7_outbound.send", organisation_id=row.organisation_id,
                            resource_type="OutboundMessage", resource_id=row.id, job_id=row.job_id)
        following = hl7_outbound.next_waiting(session, row) if status != "pending" else None
        job = session.get(Job, following.job_id) if following and following.job_id else None
        if job is not None and job.status == "retrying":  # it waits behind us: wake it after this commit
            # from_dead: not a new submission for the metrics, like a requeue.
            stage(session, Outgoing(job.id, job.kind, job.queue, job.arguments, from_dead=True))


def _outcome(runtime: Runtime, delivery: Delivery) -> Exception | None:
    """Send and record; the error to raise for the pipeline, None when delivered."""
    name = delivery.destination.name
    try:
        ack = mllp_client.send(delivery.destination, delivery.message, timeout=runtime.settings.hl7_ack_timeout)
    except mllp_client.MllpSendError as exc:
        hl7_metrics.SENT.labels(name, "error").inc()
        _record(runtime, delivery, "dead" if delivery.last else "pending", None, str(exc)[:500])
        return TransientError(f"HL7 to {name}: {exc}")
    if ack.control_id != delivery.control_id:
        hl7_metrics.SENT.labels(name, "mismatch").inc()
        _record(runtime, delivery, "dead" if delivery.last else "pending", ack, "MSA-2 does not echo MSH-10")
        return TransientError(f"HL7 to {name}: the ACK is for another message")
    if ack.code in ("AA", "CA"):
        hl7_metrics.SENT.labels(name, "delivered").inc()
        _record(runtime, delivery, "sent", ack, None)
        return None
    if ack.code in ("AR", "CR"):
        hl7_metrics.SENT.labels(name, "rejected").inc()
        _record(runtime, delivery, "dead", ack, "rejected by the destination (AR)")
        return PermanentError(f"HL7 to {name}: rejected (AR)")
    hl7_metrics.SENT.labels(name, "error").inc()
    _record(runtime, delivery, "dead" if delivery.last else "pending", ack, f"the destination answered {ack.code}")
    return TransientError(f"HL7 to {name}: {ack.code}")


@job_kind(hl7_outbound.SEND_KIND, queue="hl7.outbound")
def send_message(outbound_id: int) -> None:
    """Deliver one outbound message when its turn comes (one in flight per destination)."""
    runtime = current()
    delivery = _ready(runtime, outbound_id)
    if delivery is None:
        return
    if isinstance(delivery, str):
        raise PermanentError(delivery)
    lock = runtime.redis.lock(f"triage:hl7-outbound:{delivery.destination.name}",
                              timeout=runtime.settings.hl7_ack_timeout + 30, blocking=False)
    if not lock.acquire(blocking=False):
        raise Postpone(WAIT, f"another message to {delivery.destination.name} is in flight")
    try:
        error = _outcome(runtime, delivery)
    finally:
        lock.release()
    if error is not None:
        raise error
