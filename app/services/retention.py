"""Retention of operational data: finished ledger jobs, raw HL7, webhook attempts.

Each kind has its own retention (settings, in days); a pass deletes only rows older than that and
only in final states — a dead job, a failed HL7 message or an unsent outbound message stays for
review however old. Every pass writes an audit record (actor: the pruning job), even when it
removed nothing, so the audit log shows that retention ran and what it removed.
Idempotency keys and generated PDFs have their own pruning (`idempotency.prune`, `reports.prune`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from app.models import Hl7Message, Job, JobStatus, MessageStatus, OutboundMessage, WebhookAttempt

#: The shortest retention any setting may ask for: recent history stays for investigations.
MINIMUM_DAYS = 7


def _deleted(session: Session, statement: object) -> int:
    return int(session.execute(statement).rowcount or 0)  # type: ignore[call-overload]


def ledger(session: Session, before: datetime) -> int:
    """Succeeded and cancelled jobs finished before `before` (their attempts go with them)."""
    return _deleted(session, delete(Job).where(Job.status.in_((JobStatus.SUCCEEDED.value, JobStatus.CANCELLED.value)),
                                               Job.finished_at < before))


def hl7(session: Session, before: datetime) -> int:
    """Raw inbound messages processed (or stored as unsupported), and outbound messages sent, before
    `before`. Rejected and failed messages stay for review; FHIR resources made from a message stay
    (they no longer point at it)."""
    inbound = _deleted(session, delete(Hl7Message).where(
        Hl7Message.status.in_((MessageStatus.PROCESSED.value, MessageStatus.UNSUPPORTED.value)),
        Hl7Message.received_at < before))
    return inbound + _deleted(session, delete(OutboundMessage).where(OutboundMessage.status == "sent",
                                                                     OutboundMessage.sent_at < before))


def webhook_attempts(session: Session, before: datetime) -> int:
    """Delivery attempts made before `before` (each delivery keeps its final status)."""
    return _deleted(session, delete(WebhookAttempt).where(WebhookAttempt.attempted_at < before))


#: Each pruner with the table name its audit record names.
PRUNERS: dict[str, Callable[[Session, datetime], int]] = {
    "jobs": ledger,
    "hl7_messages": hl7,
    "webhook_attempts": webhook_attempts,
}


def cutoff(now: datetime, days: int) -> datetime:
    """The moment before which rows may go, never fewer than MINIMUM_DAYS back."""
    return now - timedelta(days=max(days, MINIMUM_DAYS))
